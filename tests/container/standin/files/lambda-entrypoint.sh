#!/bin/sh
# Entrypoint of the lambda-ml-serve stand-in for the AWS Lambda Python base
# image. Same contract as the official /lambda-entrypoint.sh: exactly one
# argument, the handler string (the image's CMD); without
# AWS_LAMBDA_RUNTIME_API the Runtime Interface Emulator serves the
# invocation API and runs the runtime, otherwise the runtime talks to the
# Runtime API given in AWS_LAMBDA_RUNTIME_API directly.
#
# RIE addresses (only used when AWS_LAMBDA_RUNTIME_API is unset):
#   LMS_RIE_ADDRESS              invocation endpoint (default 0.0.0.0:8080).
#       Keep the default with a bridge network and `-p 127.0.0.1:PORT:8080`
#       (the published port is forwarded to the container's bridge address,
#       so a loopback-only address inside the container is unreachable).
#       With `--network host` use a loopback address such as 127.0.0.1:PORT.
#   LMS_RIE_RUNTIME_API_ADDRESS  Runtime API for the runtime process
#       (default 127.0.0.1:9001; pick a free port with --network host).

if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie \
    --runtime-interface-emulator-address="${LMS_RIE_ADDRESS:-0.0.0.0:8080}" \
    --runtime-api-address="${LMS_RIE_RUNTIME_API_ADDRESS:-127.0.0.1:9001}" \
    "$RUNTIME_ENTRYPOINT"
else
  exec "$RUNTIME_ENTRYPOINT"
fi
