#!/usr/bin/env bash
# muscle_jax as several processes on this machine: a pod or cluster configuration on a laptop.
#
# Usage (from the repository root, with the package installed):
#   launch/local.sh NUM_PROCESSES MAIN_ARGS...
#   e.g. launch/local.sh 2 --config=configs/tiny.py --workdir=/tmp/muscle_local
# Environment:
#   DEVICES_PER_PROCESS  simulated CPU devices each process sees (default: JAX's own, 1 on CPU)
#   PORT                 the coordinator's port on 127.0.0.1 (default: a free one)
#   LOG_DIR              where process_K.log (each process's output) goes
#                        (default: a new directory under ${TMPDIR:-/tmp}, printed)
#   PYTHON               the interpreter (default: the active virtual environment's, else
#                        the README's .venv beside this script, else python3)
#
# Each process runs `python -m muscle_jax.main MAIN_ARGS...` with JAX_COORDINATOR_ADDRESS,
# JAX_NUM_PROCESSES and JAX_PROCESS_ID set, so JAX's distributed runtime joins them; process 0
# writes the workdir's logs and results, all of them write the checkpoints together. Ctrl-C
# or SIGTERM to this script reaches every process as SIGTERM: they agree on a step, save one
# checkpoint and stop; the same command resumes. The script waits for all processes and exits
# with the first non-zero status (a process that dies makes the others exit with an error
# after --heartbeat_timeout_seconds).

set -euo pipefail

if (($# < 2)) || [[ "$1" == -h || "$1" == --help ]] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
num_processes=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/python.sh
source "$repo/launch/python.sh"
python=$(muscle_python "$repo")
if ! "$python" -c "import muscle_jax" 2>/dev/null; then
  echo "launch/local.sh: $python cannot import muscle_jax. Install it (README, Quick start)" \
    "or set PYTHON=/path/to/your/venv/bin/python." >&2
  exit 2
fi

if [[ -z "${PORT:-}" ]]; then
  PORT=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
log_dir=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/muscle_local.XXXXXX")}
mkdir -p "$log_dir"
if [[ -n "${DEVICES_PER_PROCESS:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
fi
echo "local.sh: $num_processes processes, coordinator 127.0.0.1:$PORT, logs in $log_dir" >&2

pids=()
for ((i = 0; i < num_processes; i++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$num_processes" JAX_PROCESS_ID="$i" \
    "$python" -m muscle_jax.main "$@" >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done

echo "${pids[*]}" >"$log_dir/pids"

forward() {
  echo "local.sh: stopping: SIGTERM to every process (they checkpoint at one step)" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap forward INT TERM

status=0
for i in "${!pids[@]}"; do
  # `wait` returns early when a trapped signal arrives: wait again until the process is gone.
  while true; do
    set +e
    wait "${pids[$i]}"
    code=$?
    set -e
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      break
    fi
  done
  if ((code != 0)); then
    echo "local.sh: process $i exited with status $code (log: $log_dir/process_$i.log)" >&2
    ((status == 0)) && status=$code
  fi
done
tail -n 3 "$log_dir/process_0.log" >&2 || true
exit "$status"
