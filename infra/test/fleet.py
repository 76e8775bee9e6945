"""Helpers for run.sh's fleet test: the real binaries against what the apply created.

    fleet.py task-env OUTPUTS_JSON planner|worker   NAME=VALUE per line, from the registered task definition
    fleet.py put-config OUTPUTS_JSON SRC DST REPO...  write a config for SRC/REPO → DST to config_s3_uri
    fleet.py tags REGISTRY REPO...                  REPO:TAG per line, every tag of each repository
    fleet.py digests REGISTRY REF...                REF DIGEST per line (HEAD manifest; `-` when absent)
    fleet.py queue-depths OUTPUTS_JSON              visible + in-flight messages: jobs queue, then DLQ
    fleet.py harness-user NAME                      an IAM user allowed everything; its key, NAME=VALUE
    fleet.py assume ROLE_ARN SESSION                sts:AssumeRole; the session's key, NAME=VALUE
    fleet.py expect-denied OUTPUTS_JSON PLANNER_CREDS WORKER_CREDS
                                                    calls the roles must not make are refused

OUTPUTS_JSON is `terraform output -json` of test/apply; AWS calls go to
AWS_ENDPOINT_URL (moto, set by run.sh) with the credentials in the environment,
or those of a CREDS file (NAME=VALUE lines, as `assume` prints them).
REGISTRY is host:port, plain HTTP.
"""

import json
import os
import sys
import urllib.error
import urllib.request

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def outputs(path):
    with open(path) as f:
        return json.load(f)["module"]["value"]


def client(service, creds=None):
    import boto3

    keys = {}
    if creds:
        keys = {
            "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": creds.get("AWS_SESSION_TOKEN"),
        }
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1", **keys)


def read_creds(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def task_env(out, which):
    arn = out[f"{which}_task_definition_arn"]
    td = client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    (c,) = td["containerDefinitions"]
    for e in c.get("environment", []):
        print(f"{e['name']}={e['value']}")


def put_config(out, src, dst, repos):
    config = {
        "repos": [{"source": f"{src}/{r}"} for r in repos],
        "destination_registry": dst,
        "registries": {src: {"plain_http": True}, dst: {"plain_http": True}},
    }
    uri = out["config_s3_uri"]
    bucket, key = uri[len("s3://") :].split("/", 1)
    body = json.dumps(config, indent=2).encode()
    client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    print(f"wrote {uri}:\n{body.decode()}")


def get(url, method="GET"):
    req = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT})
    return urllib.request.urlopen(req, timeout=10)


def tags(registry, repos):
    for repo in repos:
        with get(f"http://{registry}/v2/{repo}/tags/list") as r:
            for tag in sorted(json.load(r).get("tags") or []):
                print(f"{repo}:{tag}")


def digests(registry, refs):
    for ref in refs:
        repo, tag = ref.rsplit(":", 1)
        try:
            with get(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD") as r:
                print(ref, r.headers.get("Docker-Content-Digest") or "-")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            print(ref, "-")


def queue_depths(out):
    sqs = client("sqs")
    for url in (out["jobs_queue_url"], out["dlq_url"]):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        n = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        print(url, n)


ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def harness_user(name):
    """The identity of this script's own calls while moto enforces IAM."""
    iam = client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="everything", PolicyDocument=json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    print(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}")
    print(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}")


def assume(role_arn, session):
    # moto keeps the session's key and, with IAM enforced, authorizes its calls by the role's
    # policies. The caller is not checked against the role's trust policy here: run.sh assumes
    # before it turns enforcement on (in AWS, ECS assumes the role for the task).
    c = client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]
    print(f"AWS_ACCESS_KEY_ID={c['AccessKeyId']}")
    print(f"AWS_SECRET_ACCESS_KEY={c['SecretAccessKey']}")
    print(f"AWS_SESSION_TOKEN={c['SessionToken']}")


def expect_denied(out, planner_creds, worker_creds):
    """Each call must be refused: proof that moto checks the roles' actions and resources."""
    from botocore.exceptions import ClientError

    planner, worker = read_creds(planner_creds), read_creds(worker_creds)
    dummy = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    bucket, key = out["config_s3_uri"][len("s3://") :].split("/", 1)
    calls = [
        ("dummy keys: sqs:GetQueueAttributes", "InvalidClientTokenId",
         lambda: client("sqs", dummy).get_queue_attributes(QueueUrl=out["jobs_queue_url"])),
        ("planner: sqs:ReceiveMessage on the jobs queue", "AccessDenied",
         lambda: client("sqs", planner).receive_message(QueueUrl=out["jobs_queue_url"], WaitTimeSeconds=0)),
        ("planner: dynamodb:GetItem on a table other than the ledger", "AccessDenied",
         lambda: client("dynamodb", planner).get_item(TableName="not-the-ledger", Key={"pk": {"S": "x"}})),
        ("worker: s3:PutObject on the config object", "AccessDenied",
         lambda: client("s3", worker).put_object(Bucket=bucket, Key=key, Body=b"{}")),
    ]
    bad = 0
    for name, want, call in calls:
        try:
            call()
            print(f"{name}: allowed (want {want})")
            bad += 1
        except ClientError as e:
            # moto answers IAM errors as XML, which the JSON protocols do not parse: look in the message.
            got = e.response["Error"].get("Code", "")
            ok = e.response["ResponseMetadata"]["HTTPStatusCode"] == 403 and want in f"{got} {e}"
            print(f"{name}: {'refused' if ok else 'unexpected error'} ({got or e})"[:300])
            bad += not ok
    sys.exit(1 if bad else 0)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "task-env":
        task_env(outputs(args[0]), args[1])
    elif cmd == "put-config":
        put_config(outputs(args[0]), args[1], args[2], args[3:])
    elif cmd == "tags":
        tags(args[0], args[1:])
    elif cmd == "digests":
        digests(args[0], args[1:])
    elif cmd == "queue-depths":
        queue_depths(outputs(args[0]))
    elif cmd == "harness-user":
        harness_user(args[0])
    elif cmd == "assume":
        assume(args[0], args[1])
    elif cmd == "expect-denied":
        expect_denied(outputs(args[0]), args[1], args[2])
    else:
        sys.exit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
