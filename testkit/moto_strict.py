"""moto_server as strict as AWS on the rules ecr-sync's tests rely on, where moto is laxer.

    moto_strict.py -H 127.0.0.1 -p PORT      the same arguments as moto_server

Every moto the tests, the load test, the benchmarks and infra/test/run.sh start is this one.

## One request at a time where AWS is atomic

moto's server answers each request on its own thread, and moto's models take no lock where
the services promise atomicity:

- DynamoDB: a conditional write reads the item, checks the condition and writes, unlocked.
  Two writes to one item at the same moment can both pass their conditions, and the later one
  wins — a worker's `running` landing on the `succeeded` another request wrote a moment
  before, which DynamoDB's condition would have refused. Every DynamoDB call here holds one
  lock (moto is CPU-bound on the GIL anyway).
- SQS: DeleteMessage rebuilds the queue's message list without the lock SendMessage appends
  under; a message sent during the rebuild is dropped — lost, which SQS never does. Deletes
  here hold the queue's lock.

`MOTO_STRICT_LAX=1` leaves both as moto has them and `MOTO_STRICT_WIDEN_MS=N` holds every
DynamoDB item read N ms: testkit's `moto_strict` test shows with them that moto's own
conditional writes race and this stand-in's do not.

## IAM as AWS checks it

infra/test/run.sh's fleet test runs the planner and the worker under the module's task roles with
moto's IAM enforcement on (POST /moto-api/reset-auth). moto checks a call's action against
the caller's identity policies, matching each statement's Resource against the ARN the
service's handler names. moto 5 names one for SQS (the queue of QueueUrl), S3 (bucket or
bucket/key), IAM role calls and sts:AssumeRole (the role), and `*` for every other call,
which no statement scoped to an ARN matches: under the module's least-privilege policies
every DynamoDB call and every GetQueueUrl would be refused, though AWS allows them. This
stand-in makes three changes, each toward what AWS does, none that allows more:

- DynamoDB calls are checked against the table of TableName (`table/NAME/index/INDEX` with
  IndexName), a batch call on one table against that table, anything else against `*`.
- SQS GetQueueUrl is checked against the queue named by QueueName (and QueueOwnerAWSAccountId).
- SQS batch calls are checked as their single action (SendMessageBatch as sqs:SendMessage):
  IAM has no sqs:SendMessageBatch, but moto asks for it.

Every refusal is also logged to stderr as `moto IAM denied: PRINCIPAL ACTION on RESOURCE`, so
run.sh can name the permission a role lacked: moto answers it with IAM's XML error, which
the SDKs cannot parse on JSON-protocol services (the binaries only see "unhandled error").

Still not evaluated: conditions (moto treats an identity policy's conditions as met),
resource-based policies (only a bucket policy's Deny, on object calls), session expiry.

## Settings AWS keeps

moto drops a Lambda function's `LoggingConfig` (the log group its logs go to): CreateFunction and
UpdateFunctionConfiguration take it, GetFunction never returns it. Here the function keeps it
and returns it as Lambda does (defaults: text logs to `/aws/lambda/NAME`), so the apply test
can check which log group the module gave the function.
"""

import functools
import os
import sys
import threading
import time

from moto.awslambda.models import LambdaFunction
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.iam.access_control import IAMRequestBase
from moto.sqs.models import Queue
from moto.sqs.responses import SQSResponse
from moto.utilities.utils import get_partition


def dynamodb_resource(self):
    def table_arn(name):
        if name.startswith("arn:"):
            return name
        return f"arn:{get_partition(self.region)}:dynamodb:{self.region}:{self.current_account}:table/{name}"

    name = self._get_param("TableName")
    if name:
        index = self._get_param("IndexName")
        return table_arn(name) + (f"/index/{index}" if index else "")
    tables = list(self._get_param("RequestItems") or {})
    if len(tables) == 1:
        return table_arn(tables[0])
    return "*"


sqs_queue_resource = SQSResponse._determine_resource


def sqs_resource(self):
    if self._get_action() == "GetQueueUrl":
        name = self._get_param("QueueName")
        account = self._get_param("QueueOwnerAWSAccountId") or self.current_account
        return f"arn:{get_partition(self.region)}:sqs:{self.region}:{account}:{name}"
    return sqs_queue_resource(self)


check_action_permitted = IAMRequestBase.check_action_permitted

# "You cannot set permissions explicitly for SendMessageBatch, DeleteMessageBatch, or
# ChangeMessageVisibilityBatch" (SQS Developer Guide, "Amazon SQS batch actions").
SQS_BATCH_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}


def check_and_log(self, resource):
    self._action = SQS_BATCH_ACTIONS.get(self._action, self._action)
    try:
        check_action_permitted(self, resource)
    except Exception:
        who = self._access_key.arn
        print(f"moto IAM denied: {who} {self._action} on {resource}", file=sys.stderr, flush=True)
        raise


# moto's BaseResponse.call_action authorizes against `_determine_resource()` when a handler
# has one. Stop if a moto release gives DynamoDB its own: compare it with this one first.
assert not hasattr(DynamoHandler, "_determine_resource"), "moto's DynamoHandler names resources now"
DynamoHandler._determine_resource = dynamodb_resource
SQSResponse._determine_resource = sqs_resource
IAMRequestBase.check_action_permitted = check_and_log

DYNAMODB_LOCK = threading.RLock()

# Every DynamoDB backend call that reads or writes items (a read while another call writes
# could otherwise see half an update, or a table changing size under a scan).
DYNAMODB_ITEM_CALLS = [
    "put_item", "get_item", "query", "scan", "update_item", "delete_item",
    "transact_write_items", "transact_get_items", "batch_get_item", "batch_write_item",
    "execute_statement", "execute_transaction", "batch_execute_statement",
]


def one_at_a_time(lock, fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)

    return locked


def delete_under_lock(delete):
    @functools.wraps(delete)
    def locked(self, receipt_handle):
        with self._messages_lock:
            return delete(self, receipt_handle)

    return locked


def slow_reads(get_item, seconds):
    @functools.wraps(get_item)
    def slow(*args, **kwargs):
        item = get_item(*args, **kwargs)
        time.sleep(seconds)
        return item

    return slow


if os.environ.get("MOTO_STRICT_LAX") != "1":
    for name in DYNAMODB_ITEM_CALLS:
        setattr(DynamoDBBackend, name, one_at_a_time(DYNAMODB_LOCK, getattr(DynamoDBBackend, name)))
    Queue.delete_message = delete_under_lock(Queue.delete_message)
def keeps_logging_config():
    """Makes LambdaFunction store and return LoggingConfig (see the module docs)."""
    init, configuration, update = (
        LambdaFunction.__init__,
        LambdaFunction.get_configuration,
        LambdaFunction.update_configuration,
    )

    @functools.wraps(init)
    def init_keeping(self, account_id, spec, *args, **kwargs):
        init(self, account_id, spec, *args, **kwargs)
        self.logging_config = dict(spec.get("LoggingConfig") or {})

    @functools.wraps(configuration)
    def configuration_with_logging(self, *args, **kwargs):
        config = configuration(self, *args, **kwargs)
        kept = getattr(self, "logging_config", {})
        config["LoggingConfig"] = {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.function_name}", **kept}
        return config

    @functools.wraps(update)
    def update_keeping(self, config_updates):
        if "LoggingConfig" in config_updates:
            self.logging_config = dict(config_updates["LoggingConfig"] or {})
        return update(self, config_updates)

    LambdaFunction.__init__ = init_keeping
    LambdaFunction.get_configuration = configuration_with_logging
    LambdaFunction.update_configuration = update_keeping


keeps_logging_config()

WIDEN_MS = int(os.environ.get("MOTO_STRICT_WIDEN_MS") or 0)
if WIDEN_MS:
    Table.get_item = slow_reads(Table.get_item, WIDEN_MS / 1000)

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
