#!/usr/bin/env bash
# Property-based checks of `kiln serve` with schemathesis (PyPI) against moby's own spec of
# API 1.41 (../shared/conformance/engine-api/swagger-v1.41.yaml), restricted to the operations
# kiln implements that touch nothing outside the daemon: _ping, version, info, images list,
# inspect, tag, delete and get. (auth, images/create, push and build reach registries or take
# tar bodies; events stream.) Checks: no 5xx, no crash, no hang (a request timeout), and
# responses that validate against the schema. Status codes are not checked against the spec:
# dockerd answers 400 and 404 where moby's spec lists only 200 and 500 (an unknown image for
# `images/get`, a bad filter for `images/json`), and kiln answers as dockerd does.
#
#   scripts/schemathesis.sh             # bounded: 25 examples per operation
#   EXAMPLES=500 scripts/schemathesis.sh
#
# The daemon listens on TCP with mutual TLS (certificates made here with openssl), which
# schemathesis speaks; a temp store holds a busybox image so names and IDs resolve. Needs root
# and `pip install schemathesis`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
spec=${ENGINE_API_SPEC:-$here/../shared/conformance/engine-api/swagger-v1.41.yaml}
[[ -f $spec ]] || spec=/work/shared/conformance/engine-api/swagger-v1.41.yaml
kiln=${KILN:-$here/target/debug/kiln}
[[ -x $kiln ]] || (cd "$here" && cargo build -q)
command -v schemathesis >/dev/null || { echo "schemathesis.sh: pip install schemathesis" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-schemathesis.XXXXXX")
serve_pid=
cleanup() {
    [[ -n $serve_pid ]] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

cert() { # NAME EXTENSIONS
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf '%b' "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=kiln schemathesis CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout ca.key -out ca.crt 2>/dev/null
cert server 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n'
cert client 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n'

export KILN_ROOT=$work/store
"$here/scripts/busybox-rootfs.sh" rootfs.tar
"$kiln" import rootfs.tar busybox:latest >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$kiln" serve --host "unix://$work/kiln.sock" --host "tcp://127.0.0.1:$port" --tlsverify \
    --tlscacert ca.crt --tlscert server.crt --tlskey server.key 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do [[ -S $work/kiln.sock ]] && break; sleep 0.1; done

schemathesis run "$spec" --url "https://127.0.0.1:$port/v1.41" \
    --tls-verify ca.crt --request-cert client.crt --request-cert-key client.key \
    --include-path-regex '^/(_ping|version|info|images/json|images/\{name\}/(json|tag|get|history)|images/\{name\}|images/get)$' \
    --checks not_a_server_error,response_schema_conformance \
    --request-timeout 30 --max-examples "${EXAMPLES:-25}" --workers 1 "$@" || status=$?
if [[ ${status:-0} -ne 0 ]]; then
    echo "--- kiln serve log" >&2
    tail -20 "$work/serve.log" >&2
fi
exit "${status:-0}"
