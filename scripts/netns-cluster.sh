#!/usr/bin/env bash
# An emulated multi-host cluster on one machine (needs root): H network namespaces ("hosts"),
# each joined to one bridge by a veth pair whose two ends are rate-limited with tc htb (the
# host's egress inside the namespace, its ingress on the bridge side), W workers per namespace.
# Runs `lockstep bench allreduce` or a training job across the namespaces (ranks host-major:
# rank r on host r / W, one `lockstep node` per rank in env mode, as a cluster manager starts
# them) and removes everything it created -- processes, namespaces, veths, the bridge, qdiscs
# and shared-memory segments -- on success, failure or Ctrl-C.
#
# Usage:
#   scripts/netns-cluster.sh [-H hosts] [-W workers] [-r rate] [-b lockstep] [-o outdir] bench [bench allreduce args]
#   scripts/netns-cluster.sh [-H hosts] [-W workers] [-r rate] [-b lockstep] [-o outdir] train MANIFEST [node args]
#   scripts/netns-cluster.sh ... shell 'COMMAND'   # COMMAND runs with the cluster up ($NS_PREFIX, $HOST_IPS_LIST, $BRIDGE_IP)
#
# Defaults: -H 4 -W 2 -r 1gbit -b target/release/lockstep -o runs/netns.
# This kernel has no netem, so no delay is added: the veth round trip (tens of microseconds) is
# the emulated latency. tc rates are htb rates (e.g. 1gbit, 10gbit, 500mbit).
set -euo pipefail

HOSTS=4 WORKERS=2 RATE=1gbit BIN=target/release/lockstep OUT=runs/netns
while getopts "H:W:r:b:o:" opt; do
    case $opt in
        H) HOSTS=$OPTARG ;; W) WORKERS=$OPTARG ;; r) RATE=$OPTARG ;;
        b) BIN=$OPTARG ;; o) OUT=$OPTARG ;; *) sed -n 2,20p "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
MODE=${1:-}; shift || true
[ "$(id -u)" = 0 ] || { echo "netns-cluster: needs root" >&2; exit 2; }
[ -x "$BIN" ] || { echo "netns-cluster: no binary at $BIN (cargo build --release)" >&2; exit 2; }
BIN=$(realpath "$BIN")
mkdir -p "$OUT"

ID=$$
NS_PREFIX="lsc${ID}h"           # namespaces lsc<pid>h0 .. h<H-1>
BRIDGE="lsbr${ID}"
NET="10.$((200 + ID % 50)).$((ID / 50 % 250))"
BRIDGE_IP="$NET.254"
CLUSTER="netns${ID}"
PIDS=()

cleanup() {
    set +e
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
    for ((h = 0; h < HOSTS; h++)); do
        ns="$NS_PREFIX$h"
        if ip netns list | grep -qw "$ns"; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
            ip netns del "$ns"
        fi
        ip link del "lsv${ID}h$h" 2>/dev/null   # gone with the namespace's end already
    done
    ip link del "$BRIDGE" 2>/dev/null
    rm -f /dev/shm/lockstep-"$CLUSTER"* 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Bridge in the root namespace, with an address for the bench's rendezvous coordinator.
ip link add "$BRIDGE" type bridge
ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
HOST_IPS=()
for ((h = 0; h < HOSTS; h++)); do
    ns="$NS_PREFIX$h" veth="lsv${ID}h$h" ip="$NET.$((h + 1))"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name "${veth}p"
    ip link set "${veth}p" netns "$ns"
    ip link set "$veth" master "$BRIDGE" up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip link set "${veth}p" name eth0
    ip netns exec "$ns" ip addr add "$ip/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    # The host's link: RATE each way (egress inside the namespace, ingress on the bridge side).
    for side in "ip netns exec $ns tc qdisc add dev eth0" "tc qdisc add dev $veth"; do
        $side root handle 1: htb default 10
    done
    ip netns exec "$ns" tc class add dev eth0 parent 1: classid 1:10 htb rate "$RATE" ceil "$RATE"
    tc class add dev "$veth" parent 1: classid 1:10 htb rate "$RATE" ceil "$RATE"
    HOST_IPS+=("$ip")
done
HOST_IPS_LIST="${HOST_IPS[*]}"
export NS_PREFIX HOST_IPS_LIST BRIDGE_IP
echo "netns-cluster: $HOSTS hosts x $WORKERS workers at $RATE on $BRIDGE (${HOST_IPS[*]})" >&2

case "$MODE" in
    bench)
        "$BIN" bench allreduce --world $((HOSTS * WORKERS)) --ranks-per-host "$WORKERS" \
            --netns "$NS_PREFIX" --bind "$BRIDGE_IP" --transport auto "$@" &
        PIDS+=($!)
        wait "${PIDS[-1]}"
        ;;
    train)
        MANIFEST=$(realpath "$1"); shift
        export LOCKSTEP_TOKEN=${LOCKSTEP_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
        WORLD=$((HOSTS * WORKERS))
        for ((r = 0; r < WORLD; r++)); do
            h=$((r / WORKERS))
            extra=()
            [ "$r" = 0 ] && extra=(--report "$OUT/report.json")
            ip netns exec "$NS_PREFIX$h" env RANK=$r WORLD_SIZE=$WORLD \
                MASTER_ADDR="${HOST_IPS[0]}" MASTER_PORT=29500 \
                "$BIN" node "$MANIFEST" --run-dir "$OUT/rank-$r" \
                --set "cluster.name=\"$CLUSTER\"" "${extra[@]}" "$@" \
                >"$OUT/rank-$r.log" 2>&1 &
            PIDS+=($!)
        done
        status=0
        for p in "${PIDS[@]}"; do wait "$p" || status=$?; done
        PIDS=()
        [ "$status" = 0 ] || { echo "netns-cluster: a node failed; logs in $OUT" >&2; tail -5 "$OUT"/rank-*.log >&2; }
        [ -f "$OUT/report.json" ] && echo "netns-cluster: report in $OUT/report.json" >&2
        exit "$status"
        ;;
    shell)
        bash -c "$1" &
        PIDS+=($!)
        wait "${PIDS[-1]}"
        ;;
    *) sed -n 2,20p "$0"; exit 2 ;;
esac
