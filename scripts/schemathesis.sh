#!/usr/bin/env bash
# Property-based checks of `kiln serve` with schemathesis (PyPI) against moby's own spec of
# API 1.41 (../shared/conformance/engine-api/swagger-v1.41.yaml), over every operation kiln
# serves that can be fuzzed without reaching outside the daemon: system (_ping, version, info,
# events with a past `until` so the stream ends, system/df), images (list, inspect, history,
# tag, delete, get, load, build, prune, build prune, commit), containers (all but attach, wait,
# attach/ws), exec, volumes and networks. Left out, with the reason (docs/api.md has the list):
# `auth`, `images/create` and `images/{name}/push` reach registries (offline here they can
# only fail, with a 5xx as dockerd's); `attach` blocks until its container ends or starts,
# and so does `wait` (schemathesis also feeds it IDs from earlier answers: containers it
# created and started, whose fuzzed commands may run on);
# `images/search` is not served (501). Checks: no 5xx, no crash, no hang (a request timeout),
# and responses that validate against the schema. Status codes are not checked against the
# spec: dockerd answers 400, 404, 409 where moby's spec lists only 200 and 500, and kiln
# answers as dockerd does.
#
#   scripts/schemathesis.sh             # bounded: 10 examples per operation (CI, ~30 s)
#   EXAMPLES=300 scripts/schemathesis.sh
#   PHASES=examples,coverage,fuzzing scripts/schemathesis.sh   # also schemathesis' coverage
#                                       # phase (every boundary and negative value, slow)
#
# The whole run happens in a network namespace of its own (the script re-executes itself
# under `unshare --net`, loopback up): the bridges, veths and nft rules that fuzzed
# `networks/create` and container starts make live and die with it. The store is a temp
# directory; every container is removed before it goes. The daemon listens on TCP with
# mutual TLS (certificates made here with openssl), which schemathesis speaks. Seeded so that
# names resolve: a busybox image, running and exited containers, exec instances, a volume and
# a network, whose IDs are bound to the path parameters (half the cases; the other half are
# schemathesis' own strings, mostly 404s). Needs root and schemathesis (scripts/setup.sh
# installs the version this was run with).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${KILN_SCHEMATHESIS_NETNS:-} ]]; then
    exec unshare --net env KILN_SCHEMATHESIS_NETNS=1 "$0" "$@"
fi
ip link set lo up
spec=${ENGINE_API_SPEC:-$here/../shared/conformance/engine-api/swagger-v1.41.yaml}
[[ -f $spec ]] || spec=/work/shared/conformance/engine-api/swagger-v1.41.yaml
kiln=${KILN:-$here/target/debug/kiln}
[[ -x $kiln ]] || (cd "$here" && cargo build -q)
command -v schemathesis >/dev/null || { echo "schemathesis.sh: pip install schemathesis" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-schemathesis.XXXXXX")
export KILN_ROOT=$work/store
serve_pid=
cleanup() {
    # Containers run under their own supervisors, not the daemon's: remove them all first.
    "$kiln" ps -aq 2>/dev/null | xargs -r "$kiln" rm -f >/dev/null 2>&1 || true
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

# The spec as checked: moby's file with its known mistakes amended, each said below. Where
# dockerd itself writes `null` (a Go nil slice, map or pointer) for a field the spec types as an
# array or object, kiln writes what dockerd writes (clients compare with it) and the field is
# marked `x-nullable` here; only these fields, so a `null` anywhere else still fails.
python3 - "$spec" spec.yaml <<'PY'
import sys, yaml
s = yaml.safe_load(open(sys.argv[1]))
d, paths = s["definitions"], s["paths"]
# 1.41's ContainerSummary is the whole list (containers/json's answer), and system/df's
# `Containers` an array of it: an array of lists. dockerd sends a list of objects there.
paths["/system/df"]["get"]["responses"][200]["schema"]["properties"]["Containers"] = {
    "$ref": "#/definitions/ContainerSummary"
}
# dockerd on Linux writes Isolation "" and takes (and echoes) RestartPolicy "no"; later
# specs list both.
host = d["HostConfig"]["allOf"][1]["properties"]
host["Isolation"]["enum"].append("")
d["RestartPolicy"]["properties"]["Name"]["enum"].append("no")
# events is a stream of JSON objects, one per line (none before `until`), not one document.
paths["/events"]["get"]["responses"][200].pop("schema", None)
nullable = {
    "EndpointSettings": ["Aliases", "Links"],
    "ContainerConfig": ["Cmd", "Entrypoint", "Env", "OnBuild", "Labels", "Volumes", "ExposedPorts"],
    "Resources": ["BlkioDeviceReadBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteBps",
                  "BlkioDeviceWriteIOps", "DeviceCgroupRules", "DeviceRequests", "Ulimits",
                  "MemorySwappiness"],
    "IPAM": ["Options"],
}
for name, props in nullable.items():
    for prop in props:
        d[name]["properties"][prop]["x-nullable"] = True
for prop in ["Binds", "CapAdd", "CapDrop", "ExtraHosts", "GroupAdd", "Links", "SecurityOpt", "VolumesFrom"]:
    host[prop]["x-nullable"] = True
def response(path, method):
    return paths[path][method]["responses"][200]["schema"]
response("/containers/{id}/changes", "get")["x-nullable"] = True
for path, method, prop in [
    ("/exec/{id}/json", "get", "ExitCode"),
    ("/volumes", "get", "Warnings"),
    ("/containers/{id}/update", "post", "Warnings"),
    ("/containers/{id}/wait", "post", "Error"),
    ("/build/prune", "post", "CachesDeleted"),
    ("/containers/prune", "post", "ContainersDeleted"),
    ("/images/prune", "post", "ImagesDeleted"),
    ("/volumes/prune", "post", "VolumesDeleted"),
]:
    response(path, method)["properties"][prop]["x-nullable"] = True
yaml.safe_dump(s, open(sys.argv[2], "w"), sort_keys=False)
PY

"$here/scripts/busybox-rootfs.sh" rootfs.tar
"$kiln" import rootfs.tar busybox:latest >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$kiln" serve --host "unix://$work/kiln.sock" --host "tcp://127.0.0.1:$port" --tlsverify \
    --tlscacert ca.crt --tlscert server.crt --tlskey server.key 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do [[ -S $work/kiln.sock ]] && break; sleep 0.1; done

# The seeds, made through the API itself.
api() { # METHOD PATH [JSON]
    curl -sS --fail-with-body --unix-socket "$work/kiln.sock" -X "$1" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "http://kiln/v1.41$2"
}
container() { # NAME CMD-JSON START(0/1)
    local id
    id=$(api POST "/containers/create?name=$1" "{\"Image\":\"busybox\",\"Cmd\":$2,\"HostConfig\":{\"NetworkMode\":\"none\"}}" | jq -r .Id)
    [[ $3 == 1 ]] && api POST "/containers/$id/start" >/dev/null
    echo "$id"
}
running=$(container seed-running '["sleep","3600"]' 1)
running2=$(container seed-running2 '["sleep","3600"]' 1)
created=$(container seed-created '["true"]' 0)
exited=$(container seed-exited '["true"]' 1)
exec_target=$(container seed-exec '["sleep","3600"]' 1)
exec_created=$(api POST "/containers/$exec_target/exec" '{"Cmd":["true"],"AttachStdout":true}' | jq -r .Id)
exec_done=$(api POST "/containers/$exec_target/exec" '{"Cmd":["true"]}' | jq -r .Id)
api POST "/exec/$exec_done/start" '{"Detach":true}' >/dev/null
exec_long=$(api POST "/containers/$exec_target/exec" '{"Cmd":["sleep","3600"],"Tty":true}' | jq -r .Id)
api POST "/exec/$exec_long/start" '{"Detach":true,"Tty":true}' >/dev/null
api POST /volumes/create '{"Name":"seed-volume"}' >/dev/null
network=$(api POST /networks/create '{"Name":"seed-network"}' | jq -r .Id)
api POST "/images/busybox/tag?repo=seed&tag=one" >/dev/null
image_id=$(api GET /images/busybox/json | jq -r .Id)
for _ in $(seq 50); do
    [[ $(api GET "/containers/$exited/json" | jq -r .State.Status) == exited ]] && break
    sleep 0.1
done

list() { printf '"%s", ' "$@"; }
cat >schemathesis.toml <<EOF
[dictionaries.containers]
values = [$(list "$running" "$running2" "$created" "$exited" seed-running "${running:0:12}")]
[dictionaries.exec-target]
values = [$(list "$exec_target")]
[dictionaries.execs]
values = [$(list "$exec_created" "$exec_done" "$exec_long")]
[dictionaries.images]
values = [$(list busybox busybox:latest seed:one "$image_id" "${image_id#sha256:}")]
[dictionaries.volumes]
values = ["seed-volume"]
[dictionaries.networks]
values = [$(list "$network" seed-network bridge none host)]
[dictionaries.false]
values = ["false", "0"]
[dictionaries.short]
values = [0, 1]
[dictionaries.binds]
values = ["seed-volume:/data", "anon:/x:ro"]
[dictionaries.signals]
values = ["SIGWINCH", "WINCH", "28", "SIGCHLD"]

# Bind sources stay volumes: a fuzzed "/:/host" bind would give a started container the
# host's files.
[parameters]
"body.HostConfig.Binds[*]" = { dictionary = "binds" }
"body.HostConfig.Mounts[*].Source" = { dictionary = "binds" }

[[operations]]
include-path-regex = "^/containers/\\\\{id\\\\}"
parameters = { "path.id" = { dictionary = "containers", probability = 0.5 } }
[[operations]]
include-operation-id = "ContainerExec"
parameters = { "path.id" = { dictionary = "exec-target", probability = 0.5 } }
[[operations]]
include-path-regex = "^/exec/"
parameters = { "path.id" = { dictionary = "execs", probability = 0.5 } }
[[operations]]
include-path-regex = "^/images/\\\\{name\\\\}"
parameters = { "path.name" = { dictionary = "images", probability = 0.5 } }
[[operations]]
include-path-regex = "^/volumes/\\\\{name\\\\}"
parameters = { "path.name" = { dictionary = "volumes", probability = 0.5 } }
[[operations]]
include-path-regex = "^/networks/\\\\{id\\\\}"
parameters = { "path.id" = { dictionary = "networks", probability = 0.5 }, "body.Container" = { dictionary = "containers", probability = 0.5 } }
[[operations]]
include-operation-id = "ImageCommit"
parameters = { "query.container" = { dictionary = "containers", probability = 0.5 } }
[[operations]]
include-operation-id = "ContainerCreate"
parameters = { "body.Image" = { dictionary = "images", probability = 0.5 } }
# Bounded: a follower, a stats stream, a stop's grace time,
# an event stream without \`until\` would each run as long as their container (or forever).
# A dictionary binding applies only when schemathesis sends the parameter, so those that
# must always be there (stats' \`stream\`, events' \`until\`) are fixed values, and these
# three get valid values only: a malformed \`stream\` or \`follow\` counts as true (dockerd's
# boolean rule), and a stream asked for rightly goes on.
[[operations]]
include-operation-id = "ContainerLogs"
parameters = { "path.id" = { dictionary = "containers", probability = 0.5 }, "query.follow" = { dictionary = "false" } }
generation.mode = "positive"
[[operations]]
include-operation-id = "ContainerStats"
parameters = { "path.id" = { dictionary = "containers", probability = 0.5 }, "query.stream" = "false" }
generation.mode = "positive"
[[operations]]
include-operation-id = "ContainerStop"
parameters = { "path.id" = { dictionary = "containers", probability = 0.5 }, "query.t" = { dictionary = "short" } }
[[operations]]
include-operation-id = "ContainerRestart"
parameters = { "path.id" = { dictionary = "containers", probability = 0.5 }, "query.t" = { dictionary = "short" } }
[[operations]]
include-operation-id = "ContainerKill"
parameters = { "path.id" = { dictionary = "containers", probability = 0.5 }, "query.signal" = { dictionary = "signals", probability = 0.7 } }
[[operations]]
include-operation-id = "SystemEvents"
parameters = { "query.until" = "1000000000" }
generation.mode = "positive"
EOF

# images/load takes `application/x-tar`, for which schemathesis has no serializer: its bytes
# go as they are, as for build's octet-stream. The hooks also keep streams bounded.
cat >tar_body.py <<'PY'
import schemathesis

schemathesis.serializer.alias("application/x-tar", "application/octet-stream")

# The bounded forms of the streaming operations, on every request: the configuration's fixed
# values do not reach every case schemathesis makes (a stats stream without `stream=false`
# was seen running on, one JSON object a second, for the rest of a run).
BOUNDED = {
    "/containers/{id}/stats": {"stream": "false"},
    "/containers/{id}/logs": {"follow": "false"},
    "/events": {"until": "1000000000"},
}


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    fixed = BOUNDED.get(case.operation.path)
    if fixed:
        case.query = {**(case.query or {}), **fixed}
PY

# Two passes over one daemon and its seeds: first every operation that leaves the seeds in
# place, then those that remove or stop them (prunes, deletes, kill, stop), which would
# otherwise turn most of the first pass into 404s (schemathesis runs the operations in an
# order of its own).
keeping='^(SystemPing|SystemPingHead|SystemVersion|SystemInfo|SystemEvents|SystemDataUsage'
keeping+='|ImageList|ImageInspect|ImageHistory|ImageTag|ImageGet|ImageGetAll|ImageLoad|ImageBuild|BuildPrune|ImageCommit'
keeping+='|Container(List|Create|Inspect|Top|Logs|Changes|Export|Stats|Resize|Start|Restart|Update|Rename|Pause|Unpause|ArchiveInfo|Archive|Exec)|PutContainerArchive'
keeping+='|ExecStart|ExecResize|ExecInspect'
keeping+='|Volume(List|Create|Inspect)|Network(List|Inspect|Create|Connect|Disconnect))$'
removing='^(ContainerKill|ContainerStop|ContainerDelete|ContainerPrune|ImageDelete|ImagePrune'
removing+='|VolumeDelete|VolumePrune|NetworkDelete|NetworkPrune)$'

# SCOPE=images: only the system and image operations that never start a container (a quick
# look while working on those).
passes=("$keeping" "$removing")
if [[ ${SCOPE:-all} == images ]]; then
    passes=('^(SystemPing|SystemPingHead|SystemVersion|SystemInfo|ImageList|ImageInspect|ImageHistory|ImageTag|ImageDelete|ImageGet|ImageGetAll)$')
fi
status=0
for ops in "${passes[@]}"; do
    PYTHONPATH=$work SCHEMATHESIS_HOOKS=tar_body schemathesis --config-file schemathesis.toml \
        run spec.yaml --url "https://127.0.0.1:$port/v1.41" \
        --tls-verify ca.crt --request-cert client.crt --request-cert-key client.key \
        --include-operation-id-regex "$ops" \
        --checks not_a_server_error,response_schema_conformance \
        --phases "${PHASES:-examples,fuzzing}" --request-timeout 30 \
        --max-examples "${EXAMPLES:-10}" --workers 1 "$@" || status=$?
done
if [[ $status -ne 0 ]]; then
    echo "--- kiln serve log" >&2
    tail -20 "$work/serve.log" >&2
fi
exit "$status"
