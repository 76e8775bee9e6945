"""Helpers for run.sh's fleet test: the real binaries against what the apply created.

    fleet.py task-env OUTPUTS_JSON planner|worker   NAME=VALUE per line, from the registered task definition
    fleet.py put-config OUTPUTS_JSON SRC DST REPO...  write a config for SRC/REPO → DST to config_s3_uri
    fleet.py tags REGISTRY REPO...                  REPO:TAG per line, every tag of each repository
    fleet.py digests REGISTRY REF...                REF DIGEST per line (HEAD manifest; `-` when absent)
    fleet.py queue-depths OUTPUTS_JSON              visible + in-flight messages: jobs queue, then DLQ

OUTPUTS_JSON is `terraform output -json` of test/apply; AWS calls go to
AWS_ENDPOINT_URL (moto, set by run.sh). REGISTRY is host:port, plain HTTP.
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


def client(service):
    import boto3

    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


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
    else:
        sys.exit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
