"""A local S3 server for tests: moto in server mode on 127.0.0.1, a free port.

usage: moto_s3.py [--auth] BUCKET DIR [DIR...]

Uploads every file under each DIR to s3://BUCKET/<basename of DIR>/..., creates an access key,
then prints one line `PORT ACCESS_KEY SECRET_KEY` and serves until stdin closes. With --auth, access
keys are checked (INITIAL_NO_AUTH_ACTION_COUNT=0) and unknown ones refused as by real S3 (moto's
signature check does not accept every client's signing, so the data tests run without --auth).
"""
import os
import sys

auth = "--auth" in sys.argv
args = [x for x in sys.argv[1:] if x != "--auth"]
if auth:
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.s3.models import s3_backends  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

bucket, dirs = args[0], args[1:]
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
port = server.get_host_and_port()[1]

iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
iam.create_user("us-east-1", "lockstep-test")
iam.put_user_policy(
    "lockstep-test", "all",
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}')
key = iam.create_access_key("lockstep-test")

s3 = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
s3.create_bucket(bucket, "us-east-1")
for d in dirs:
    base = os.path.basename(os.path.normpath(d))
    for root, _, names in os.walk(d):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, d)
            s3.put_object(bucket, f"{base}/{rel}", open(path, "rb").read())

print(port, key.access_key_id, key.secret_access_key, flush=True)
sys.stdin.read()
server.stop()
