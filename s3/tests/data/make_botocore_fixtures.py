#!/usr/bin/env python3
"""Writes botocore.json: requests that boto3/botocore signs, for cellkv-s3's
tests to verify (tests/botocore.rs). Nothing is sent: a before-send hook
captures each prepared request and answers it locally.

Run from this directory: python3 make_botocore_fixtures.py (needs boto3).
The clock is frozen at FROZEN, and the credentials are test-only.
"""

import base64
import datetime
import io
import json
from unittest import mock

import boto3
import botocore
import botocore.auth
from botocore.awsrequest import AWSResponse
from botocore.config import Config

FROZEN = datetime.datetime(2026, 1, 2, 3, 4, 5)
ACCESS_KEY = "AKIDCELLKVTEST"
SECRET_KEY = "cellkv/test+secret/NotARealKey0000000000"
REGION = "us-east-1"

captured = []


class _Raw(io.BytesIO):
    def stream(self, *args, **kwargs):
        yield self.read()


def _capture(request, **kwargs):
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode()
    headers = [[k, v.decode() if isinstance(v, bytes) else v] for k, v in request.headers.items()]
    captured[-1].update(
        method=request.method,
        url=request.url,
        headers=headers,
        body=base64.b64encode(body).decode(),
    )
    return AWSResponse(request.url, 200, {}, _Raw(b""))


def client(endpoint):
    c = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    c.meta.events.register("before-send", _capture)
    return c


def call(name, operation, fn):
    captured.append({"name": name, "operation": operation})
    try:
        fn()
    except Exception:  # the empty local answer may not parse; the request is captured
        pass


def main():
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: FROZEN):
        plain = client("http://127.0.0.1:9000")
        tls = client("https://127.0.0.1:9443")
        awkward = "dir/a b+c%d ü&<>'\"~!*()=;,:@$.txt"
        call("list buckets", "ListBuckets", lambda: plain.list_buckets())
        call("create bucket", "CreateBucket", lambda: plain.create_bucket(Bucket="bkt"))
        call("put object", "PutObject", lambda: plain.put_object(Bucket="bkt", Key="hello.txt", Body=b"hello, cellkv"))
        call("put awkward key", "PutObject", lambda: plain.put_object(Bucket="bkt", Key=awkward, Body=b"x" * 3000, ContentType="text/plain", Metadata={"who": "me"}))
        call("list v2 with prefix and delimiter", "ListObjectsV2", lambda: plain.list_objects_v2(Bucket="bkt", Prefix="dir/a b", Delimiter="/", MaxKeys=10, StartAfter="dir/"))
        call("list v1 with marker", "ListObjects", lambda: plain.list_objects(Bucket="bkt", Marker="a+b c", Prefix="d"))
        call("get object range", "GetObject", lambda: plain.get_object(Bucket="bkt", Key=awkward, Range="bytes=0-9"))
        call("head object", "HeadObject", lambda: plain.head_object(Bucket="bkt", Key="hello.txt"))
        call("copy object", "CopyObject", lambda: plain.copy_object(Bucket="bkt", Key="copy.txt", CopySource={"Bucket": "bkt", "Key": awkward}))
        call("delete objects", "DeleteObjects", lambda: plain.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "hello.txt"}, {"Key": awkward}], "Quiet": True}))
        call("create multipart upload", "CreateMultipartUpload", lambda: plain.create_multipart_upload(Bucket="bkt", Key="big"))
        call("upload part", "UploadPart", lambda: plain.upload_part(Bucket="bkt", Key="big", UploadId="upload+id/1", PartNumber=2, Body=b"p" * 5000))
        call("complete multipart upload", "CompleteMultipartUpload", lambda: plain.complete_multipart_upload(Bucket="bkt", Key="big", UploadId="upload+id/1", MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"a54357aff0632cce46d942af68356b38"'}]}))
        call("put object over tls (aws-chunked, unsigned trailer)", "PutObject", lambda: tls.put_object(Bucket="bkt", Key="streamed", Body=io.BytesIO(b"0123456789" * 10000)))
        call("upload part over tls (aws-chunked, unsigned trailer)", "UploadPart", lambda: tls.upload_part(Bucket="bkt", Key="big", UploadId="u1", PartNumber=1, Body=io.BytesIO(b"z" * 70000)))
        captured.append({
            "name": "presigned get",
            "operation": "GetObject",
            "method": "GET",
            "url": plain.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": awkward}, ExpiresIn=3600),
            "headers": [],
            "body": "",
        })
    out = {
        "generator": "make_botocore_fixtures.py, botocore " + botocore.__version__,
        "now": FROZEN.strftime("%Y%m%dT%H%M%SZ"),
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "requests": captured,
    }
    with open("botocore.json", "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
