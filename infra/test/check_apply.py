"""Checks what `terraform apply` of test/apply created on moto.

Usage: check_apply.py OUTPUTS_JSON EXPECTED_CONFIG_JSON ENV_NAMES_TXT CONFIG_OUT

OUTPUTS_JSON is `terraform output -json` of test/apply; the moto endpoint comes
from AWS_ENDPOINT_URL (set by run.sh, with dummy credentials).
Prints one `PASS: …` or `FAIL: …` line per check (run.sh counts them) and
writes the config object fetched from S3 to CONFIG_OUT for the planner check.
"""

import json
import os
import sys

import boto3

outputs_path, expected_path, env_names_path, config_out = sys.argv[1:5]

with open(outputs_path) as f:
    out = json.load(f)["module"]["value"]
with open(expected_path) as f:
    expected_config = json.load(f)
with open(env_names_path) as f:
    env_names = {line.strip() for line in f if line.strip()}


def client(service):
    return boto3.client(
        service,
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
    )


def check(name, fn):
    try:
        problem = fn()
    except Exception as e:  # a failing call is a failed check, not a crash
        problem = f"{type(e).__name__}: {e}"
    if problem:
        print(f"FAIL: {name}: {problem}")
    else:
        print(f"PASS: {name}")


# --- outputs ------------------------------------------------------------------


def outputs_non_empty():
    empty = [k for k, v in out.items() if v in (None, "", [], {})]
    return f"empty outputs: {empty}" if empty else None


check("outputs are all non-empty", outputs_non_empty)

# --- S3 config object ---------------------------------------------------------

s3 = client("s3")
fetched = {}


def config_object_matches():
    uri = out["config_s3_uri"]
    if not uri.startswith("s3://"):
        return f"config_s3_uri is not an s3:// URI: {uri}"
    bucket, key = uri[len("s3://"):].split("/", 1)
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = obj["Body"].read()
    fetched["body"] = body
    with open(config_out, "wb") as f:
        f.write(body)
    got = json.loads(body)
    if got != expected_config:
        return f"S3 object differs from expected:\n  got      {json.dumps(got, sort_keys=True)}\n  expected {json.dumps(expected_config, sort_keys=True)}"
    if json.loads(out["config_json"]) != got:
        return "config_json output differs from the S3 object"
    if obj.get("ContentType") != "application/json":
        return f"content type {obj.get('ContentType')}"
    return None


def config_bucket_private():
    bucket = out["config_bucket_name"]
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    if not all(pab.values()):
        return f"public access block incomplete: {pab}"
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        return "versioning not enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    algo = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
    return None if algo == "aws:kms" else f"encryption {algo}"


check("S3 config object equals the expected JSON (jsonencode of the typed config)", config_object_matches)
check("config bucket is versioned, KMS-encrypted, public access blocked", config_bucket_private)

# --- SQS ----------------------------------------------------------------------

sqs = client("sqs")


def jobs_queue_redrive():
    attrs = sqs.get_queue_attributes(QueueUrl=out["jobs_queue_url"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    if int(redrive["maxReceiveCount"]) != 10:
        return f"maxReceiveCount {redrive['maxReceiveCount']}"
    if redrive["deadLetterTargetArn"] != out["dlq_arn"]:
        return f"DLQ target {redrive['deadLetterTargetArn']} != {out['dlq_arn']}"
    if int(attrs["VisibilityTimeout"]) != 900 + 120:
        return f"VisibilityTimeout {attrs['VisibilityTimeout']} (want job deadline 900 + stop timeout 120)"
    if attrs.get("KmsMasterKeyId") != out["kms_key_arn"]:
        return f"KmsMasterKeyId {attrs.get('KmsMasterKeyId')}"
    return None


def rule_senders(queue_url):
    """The SourceArns of the statements letting EventBridge send to the queue."""
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])["Attributes"]
    policy = json.loads(attrs["Policy"])
    return [
        st["Condition"]["ArnEquals"]["aws:SourceArn"]
        for st in policy["Statement"]
        if st.get("Effect", "Allow") == "Allow" and st["Principal"] == {"Service": "events.amazonaws.com"}
    ]


def jobs_queue_policy():
    senders = rule_senders(out["jobs_queue_url"])
    return f"EventBridge may send to the jobs queue: {senders}" if senders else None


def events_queue():
    attrs = sqs.get_queue_attributes(QueueUrl=out["events_queue_url"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    if redrive["deadLetterTargetArn"] != out["dlq_arn"] or int(redrive["maxReceiveCount"]) != 10:
        return f"redrive {redrive}"
    if int(attrs["VisibilityTimeout"]) != 6 * 300:
        return f"VisibilityTimeout {attrs['VisibilityTimeout']} (want 6 x the function timeout 300)"
    if attrs.get("KmsMasterKeyId") != out["kms_key_arn"]:
        return f"KmsMasterKeyId {attrs.get('KmsMasterKeyId')}"
    senders = rule_senders(out["events_queue_url"])
    return None if senders == [out["ecr_push_rule_arn"]] else f"EventBridge senders {senders}"


check("jobs queue: redrive to the DLQ with maxReceiveCount 10, visibility 1020 s, KMS", jobs_queue_redrive)
check("jobs queue policy lets no EventBridge rule send (push events go to the events queue)", jobs_queue_policy)
check("events queue: redrive to the fleet's DLQ, visibility 6 x function timeout, KMS, only the push rule sends", events_queue)

# --- DynamoDB -----------------------------------------------------------------

ddb = client("dynamodb")


def ledger_schema():
    t = ddb.describe_table(TableName=out["ledger_table_name"])["Table"]
    keys = {k["KeyType"]: k["AttributeName"] for k in t["KeySchema"]}
    if keys != {"HASH": "pk", "RANGE": "sk"}:
        return f"keys {keys}"
    types = {a["AttributeName"]: a["AttributeType"] for a in t["AttributeDefinitions"]}
    if types != {"pk": "S", "sk": "S", "gsi1pk": "S", "gsi1sk": "S"}:
        return f"attribute types {types}"
    gsis = {g["IndexName"]: g for g in t.get("GlobalSecondaryIndexes", [])}
    g = gsis.get("gsi1")
    if not g:
        return f"no gsi1 (have {list(gsis)})"
    gkeys = {k["KeyType"]: k["AttributeName"] for k in g["KeySchema"]}
    if gkeys != {"HASH": "gsi1pk", "RANGE": "gsi1sk"} or g["Projection"]["ProjectionType"] != "ALL":
        return f"gsi1 {gkeys} {g['Projection']}"
    if t.get("BillingModeSummary", {}).get("BillingMode") != "PAY_PER_REQUEST":
        return f"billing {t.get('BillingModeSummary')}"
    return None


def ledger_ttl_pitr():
    ttl = ddb.describe_time_to_live(TableName=out["ledger_table_name"])["TimeToLiveDescription"]
    if ttl.get("AttributeName") != "expires_at" or ttl.get("TimeToLiveStatus") != "ENABLED":
        return f"TTL {ttl}"
    pitr = ddb.describe_continuous_backups(TableName=out["ledger_table_name"])
    status = pitr["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
    return None if status == "ENABLED" else f"PITR {status}"


check("ledger table: pk/sk, gsi1 on gsi1pk/gsi1sk (ALL), on-demand", ledger_schema)
check("ledger table: TTL on expires_at, point-in-time recovery", ledger_ttl_pitr)

# --- ECS ----------------------------------------------------------------------

ecs = client("ecs")


def container(td_arn):
    td = ecs.describe_task_definition(taskDefinition=td_arn)["taskDefinition"]
    (c,) = td["containerDefinitions"]
    return td, c


def task_commands():
    _, p = container(out["planner_task_definition_arn"])
    _, w = container(out["worker_task_definition_arn"])
    if p["command"] != ["ecr-sync", "plan"]:
        return f"planner command {p['command']}"
    if w["command"] != ["ecr-sync-worker"]:
        return f"worker command {w['command']}"
    if p["image"] != w["image"] or not p["image"].endswith(":test"):
        return f"images {p['image']} / {w['image']}"
    return None


def task_env_names():
    _, p = container(out["planner_task_definition_arn"])
    _, w = container(out["worker_task_definition_arn"])
    names = {e["name"] for e in p["environment"]} | {e["name"] for e in w["environment"]}
    if names != env_names:
        return f"task definitions set {sorted(names)}, env-names.txt lists {sorted(env_names)}"
    return None


def task_env_values():
    _, w = container(out["worker_task_definition_arn"])
    env = {e["name"]: e["value"] for e in w["environment"]}
    want = {
        "ECR_SYNC_CONFIG": out["config_s3_uri"],
        "ECR_SYNC_QUEUE_URL": out["jobs_queue_url"],
        "ECR_SYNC_DLQ_URL": out["dlq_url"],
        "ECR_SYNC_LEDGER_TABLE": out["ledger_table_name"],
        "ECR_SYNC_LOG_FORMAT": "json",
    }
    wrong = {k: env.get(k) for k, v in want.items() if env.get(k) != v}
    return f"worker env differs: {wrong}" if wrong else None


def drain_below_stop_timeout():
    _, w = container(out["worker_task_definition_arn"])
    env = {e["name"]: e["value"] for e in w["environment"]}
    drain, stop = int(env["ECR_SYNC_DRAIN_SECONDS"]), int(w["stopTimeout"])
    return None if drain < stop else f"drain {drain} >= stopTimeout {stop}"


def job_deadline_reaches_the_worker():
    _, w = container(out["worker_task_definition_arn"])
    env = {e["name"]: e["value"] for e in w["environment"]}
    deadline = int(env.get("ECR_SYNC_JOB_DEADLINE_SECONDS", "0"))
    attrs = sqs.get_queue_attributes(QueueUrl=out["jobs_queue_url"], AttributeNames=["VisibilityTimeout"])["Attributes"]
    visibility = int(attrs["VisibilityTimeout"])
    if deadline != 900:
        return f"ECR_SYNC_JOB_DEADLINE_SECONDS {deadline} (want worker_job_deadline_seconds 900)"
    return None if visibility == deadline + int(w["stopTimeout"]) else f"visibility {visibility} != deadline {deadline} + stopTimeout"


def worker_service():
    svc = ecs.describe_services(cluster=out["cluster_name"], services=[out["worker_service_name"]])["services"][0]
    if svc["taskDefinition"] != out["worker_task_definition_arn"] or svc["launchType"] != "FARGATE":
        return f"service {svc['taskDefinition']} {svc['launchType']}"
    return None if svc["desiredCount"] == 0 else f"desiredCount {svc['desiredCount']} (want min_workers 0)"


def role_statements(role_output, policy):
    """The statements of inline policy `policy` of the role named by output `role_output`."""
    role = out[role_output].rsplit("/", 1)[1]
    doc = client("iam").get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    return doc["Statement"]


def as_list(v):
    """A policy field that may be one string or a list, as a list."""
    return v if isinstance(v, list) else [v]


def task_secrets():
    for arn in (out["planner_task_definition_arn"], out["worker_task_definition_arn"]):
        _, c = container(arn)
        names = [x["name"] for x in c.get("secrets", [])]
        if names != ["REGISTRY_PASSWORD"]:
            return f"{arn}: secrets {names}"
    for st in role_statements("execution_role_arn", "execution"):
        if st.get("Sid") == "ReadTaskSecrets":
            want = "arn:aws:secretsmanager:us-east-1:123456789012:secret:registry-AbCdEf"
            res = as_list(st["Resource"])
            return None if res == [want] else f"ReadTaskSecrets resources {res}"
    return "execution role cannot read the task secret"


def worker_iam_scoped():
    statements = role_statements("worker_task_role_arn", "worker")
    by_sid = {st.get("Sid"): st for st in statements}

    def resources(sid):
        return sorted(as_list(by_sid[sid]["Resource"]))

    want_src = sorted(
        f"arn:aws:ecr:us-east-1:111122223333:repository/{n}" for n in ("my-app/backend", "gadgets/ui")
    )
    want_dst = sorted(
        f"arn:aws:ecr:us-east-1:123456789012:repository/{n}" for n in ("my-app/backend", "my-team/ui-gadgets")
    )
    if resources("PullSources") != want_src:
        return f"PullSources on {resources('PullSources')}"
    if resources("PushDestinations") != want_dst:
        return f"PushDestinations on {resources('PushDestinations')}"
    if "ecr:CreateRepository" not in by_sid["PushDestinations"]["Action"]:
        return "create mode but no ecr:CreateRepository"
    wild = [st.get("Sid") for st in statements if st["Resource"] == "*" and st.get("Sid") != "EcrAuth"]
    return f"statements on '*': {wild}" if wild else None


check("worker IAM: pull only on the source repos, push/create only on the destinations", worker_iam_scoped)


def worker_iam_covers_its_queue_calls():
    # Every SQS call the worker makes on the jobs queue (moto does not enforce IAM, so a
    # missing action would only show on AWS): receive, batched deletes and heartbeats, resends
    # of retried jobs and fanned-out push events.
    allowed = set()
    for st in role_statements("worker_task_role_arn", "worker"):
        if out["jobs_queue_arn"] in as_list(st["Resource"]):
            allowed.update(as_list(st["Action"]))
    needed = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"}
    missing = sorted(needed - allowed)
    return f"worker may not call {missing} on the jobs queue" if missing else None


check("worker IAM covers every call it makes on the jobs queue", worker_iam_covers_its_queue_calls)


def planner_iam_creates_in_create_mode():
    # `plan` creates missing destination repositories in create mode (moto does not enforce
    # IAM, so without this check a missing action would only show on AWS).
    by_sid = {st.get("Sid"): st for st in role_statements("planner_task_role_arn", "planner")}
    create = by_sid.get("CreateDestinations")
    if not create or "ecr:CreateRepository" not in create["Action"]:
        return "create mode but the planner may not ecr:CreateRepository"
    res = as_list(create["Resource"])
    want = sorted(
        f"arn:aws:ecr:us-east-1:123456789012:repository/{n}" for n in ("my-app/backend", "my-team/ui-gadgets")
    )
    return None if sorted(res) == want else f"CreateDestinations on {sorted(res)}"


check("planner IAM: create mode may create the destination repositories, and only those", planner_iam_creates_in_create_mode)
check("task definitions: planner runs `ecr-sync plan`, worker `ecr-sync-worker`, same image", task_commands)
check("task definitions set exactly the env names in test/env-names.txt", task_env_names)
check("worker env values point at the created queue, DLQ, table and config", task_env_values)
check("worker ECR_SYNC_DRAIN_SECONDS < stopTimeout", drain_below_stop_timeout)
check("worker ECR_SYNC_JOB_DEADLINE_SECONDS is worker_job_deadline_seconds; visibility = it + stopTimeout", job_deadline_reaches_the_worker)
check("task_secrets reach both containers; execution role reads exactly that secret", task_secrets)
check("worker service on Fargate starts at 0 tasks", worker_service)

# --- Scheduler, events, logs --------------------------------------------------


def schedule_runs_planner():
    s = client("scheduler").get_schedule(Name=out["schedule_arn"].rsplit("/", 1)[1])
    t = s["Target"]
    if t["Arn"] != out["cluster_arn"]:
        return f"target {t['Arn']}"
    if t["EcsParameters"]["TaskDefinitionArn"] != out["planner_task_definition_arn"]:
        return f"task definition {t['EcsParameters']['TaskDefinitionArn']}"
    return None if t["RoleArn"] == out["scheduler_role_arn"] else f"role {t['RoleArn']}"


def push_rule_targets_queue():
    ev = client("events")
    name = out["ecr_push_rule_arn"].rsplit("/", 1)[1]
    pattern = json.loads(ev.describe_rule(Name=name)["EventPattern"])
    if pattern["detail"]["repository-name"] != ["my-app/backend", "gadgets/ui"] or pattern["account"] != ["111122223333"]:
        return f"pattern {pattern}"
    targets = ev.list_targets_by_rule(Rule=name)["Targets"]
    arns = [t["Arn"] for t in targets]
    return None if arns == [out["events_queue_arn"]] else f"targets {arns}"


def log_groups():
    logs = client("logs")
    for name in (out["planner_log_group_name"], out["worker_log_group_name"], out["event_function_log_group_name"]):
        groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        if not groups or groups[0].get("retentionInDays") != 365:
            return f"{name}: {groups}"
    return None


check("schedule runs the planner task definition on the cluster with its role", schedule_runs_planner)
check("ECR push rule matches the configured source repos/account and targets the events queue", push_rule_targets_queue)
check("log groups exist with 365-day retention", log_groups)

# --- Push-event function ------------------------------------------------------

lam = client("lambda")


def event_function():
    f = lam.get_function(FunctionName=out["event_function_name"])
    c = f["Configuration"]
    _, w = container(out["worker_task_definition_arn"])
    if c.get("PackageType") != "Image" or f["Code"].get("ImageUri") != w["image"]:
        return f"package {c.get('PackageType')} image {f['Code'].get('ImageUri')} (want the worker's {w['image']})"
    command = c.get("ImageConfigResponse", {}).get("ImageConfig", {}).get("Command")
    if command != w["command"]:
        return f"command {command} (want the worker's {w['command']})"
    if (c["Timeout"], c["MemorySize"]) != (300, 1024):
        return f"timeout {c['Timeout']} memory {c['MemorySize']}"
    if c["Role"] != out["event_function_role_arn"]:
        return f"role {c['Role']}"
    log_group = c.get("LoggingConfig", {}).get("LogGroup")
    return None if log_group == out["event_function_log_group_name"] else f"log group {log_group}"


def event_function_env():
    env = lam.get_function_configuration(FunctionName=out["event_function_name"])["Environment"]["Variables"]
    stray = sorted(set(env) - env_names)
    if stray:
        return f"sets {stray}, not in env-names.txt"
    if env != out["event_function_environment"]:
        return f"environment {env} != output {out['event_function_environment']}"
    want = {
        "ECR_SYNC_CONFIG": out["config_s3_uri"],
        "ECR_SYNC_QUEUE_URL": out["events_queue_url"],
        "ECR_SYNC_DLQ_URL": out["dlq_url"],
        "ECR_SYNC_LEDGER_TABLE": out["ledger_table_name"],
        "ECR_SYNC_LOG_FORMAT": "json",
    }
    wrong = {k: env.get(k) for k, v in want.items() if env.get(k) != v}
    if wrong:
        return f"differs: {wrong}"
    return None if "ECR_SYNC_DRAIN_SECONDS" not in env else "a function is not drained"


def event_source_mapping():
    m = lam.get_event_source_mapping(UUID=out["event_source_mapping_uuid"])
    got = (
        m["EventSourceArn"],
        m["FunctionArn"],
        m["BatchSize"],
        m.get("MaximumBatchingWindowInSeconds", 0),  # SQS's default when unset: 0
        m.get("FunctionResponseTypes"),
        m.get("ScalingConfig", {}).get("MaximumConcurrency"),
    )
    want = (out["events_queue_arn"], out["event_function_arn"], 10, 0, ["ReportBatchItemFailures"], 3)
    return None if got == want else f"mapping {got}, want {want}"


def event_function_iam():
    role = out["event_function_role_arn"].rsplit("/", 1)[1]
    trust = client("iam").get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    principals = [st["Principal"] for st in trust["Statement"]]
    if principals != [{"Service": "lambda.amazonaws.com"}]:
        return f"trusted by {principals}"
    statements = role_statements("event_function_role_arn", "events")
    by_sid = {st.get("Sid"): st for st in statements}
    worker = {st.get("Sid"): st for st in role_statements("worker_task_role_arn", "worker")}
    for sid in ("PullSources", "PushDestinations", "Ledger", "ReadConfig", "DeadLetterPermanentFailures"):
        if sid not in by_sid or by_sid[sid] != worker.get(sid):
            return f"{sid}: {by_sid.get(sid)} differs from the worker's {worker.get(sid)}"
    consume = by_sid.get("ConsumeEvents", {})
    needed = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage", "sqs:GetQueueAttributes"}
    missing = sorted(needed - set(as_list(consume.get("Action", []))))
    if missing or as_list(consume.get("Resource")) != [out["events_queue_arn"]]:
        return f"ConsumeEvents {consume} (missing {missing})"
    jobs = [st.get("Sid") for st in statements if out["jobs_queue_arn"] in as_list(st["Resource"])]
    if jobs:
        return f"may touch the jobs queue: {jobs}"
    logs = as_list(by_sid.get("WriteLogs", {}).get("Resource"))
    if len(logs) != 1 or out["event_function_log_group_name"] not in logs[0]:
        return f"WriteLogs on {logs}"
    wild = [st.get("Sid") for st in statements if st["Resource"] == "*" and st.get("Sid") != "EcrAuth"]
    return f"statements on '*': {wild}" if wild else None


def event_function_alarms():
    cw = client("cloudwatch")
    alarms = cw.describe_alarms(AlarmNamePrefix="ecr-sync-test-events-function-")["MetricAlarms"]
    got = sorted((a["MetricName"], a["Dimensions"][0]["Value"]) for a in alarms)
    want = [("Errors", out["event_function_name"]), ("Throttles", out["event_function_name"])]
    if got != want:
        return f"alarms {got}"
    age = cw.describe_alarms(AlarmNames=["ecr-sync-test-oldest-event-age"])["MetricAlarms"]
    if not age or age[0]["Dimensions"][0]["Value"] != out["events_queue_arn"].rsplit(":", 1)[1]:
        return f"oldest-event alarm {age}"
    return None


check("push-event function: the worker's image and command as a container image, 300 s, 1024 MB, its role and log group", event_function)
check("push-event function env: names in env-names.txt, values = output, ECR_SYNC_QUEUE_URL is the events queue, no drain", event_function_env)
check("event source mapping: events queue -> function, batch 10, no batching window, ReportBatchItemFailures, max concurrency 3", event_source_mapping)
check("push-event function IAM: trusted by Lambda only; the worker's copy, ledger, config and DLQ rights; the events queue only; its log group", event_function_iam)
check("push-event function alarms: errors, throttles, oldest event age", event_function_alarms)
