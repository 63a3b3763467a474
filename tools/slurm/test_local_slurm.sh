#!/usr/bin/env bash
# A real Slurm run of the scale-out recipe on this one machine (by hand; not part of CI):
# starts slurmctld and slurmd (Debian's slurm-wlm, one node on 127.0.0.1, no munge, private
# ports and state in a temporary directory), makes a tiny random-weight Llama teacher and a
# small corpus, runs teacher_array.sbatch as a 4-task job array and merge.sbatch after it
# (afterok), then checks that the merged cache verifies and decodes to exactly the values of
# a single-process `logitcache teacher` run. Stops both daemons and removes everything at exit.
#
#   apt-get install slurmctld slurmd slurm-client    # once; needs root (slurmd runs jobs as root here)
#   swift build -c release && tools/slurm/test_local_slurm.sh
#
# Environment: LOGITCACHE (default .build/release/logitcache), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LOGITCACHE=$(realpath "${LOGITCACHE:-.build/release/logitcache}")
for tool in slurmctld slurmd sbatch squeue scontrol sinfo python3; do
    command -v "$tool" >/dev/null || { echo "test_local_slurm: $tool not found (apt-get install slurmctld slurmd slurm-client)" >&2; exit 2; }
done
[ -x "$LOGITCACHE" ] || { echo "test_local_slurm: no logitcache binary at $LOGITCACHE (swift build -c release)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test_local_slurm: run as root (slurmd launches the jobs)" >&2; exit 2; }

W=$(mktemp -d /tmp/logitcache-slurm.XXXXXX)
NODE=$(hostname -s)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$W/state" "$W/spool" "$W/logs"

echo "== a random teacher (vocabulary of the committed GPT-2-style test tokenizer) and a corpus"
TOKENIZER=$ROOT/Tests/TokenizersTests/Fixtures/gpt2.tokenizer.json
python3 - "$W" <<'PY'
import json, struct, sys
import numpy as np
w = sys.argv[1]
V, C, L, H, KH, I = 2000, 32, 2, 4, 2, 64
D = C // H
config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": C,
          "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KH, "head_dim": D,
          "intermediate_size": I, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
          "torch_dtype": "float32"}
rng = np.random.default_rng(1)
def mat(r, c, fan_in):
    a = (3.0 / fan_in) ** 0.5
    return rng.uniform(-a, a, (r, c)).astype("<f4")
t = {"model.embed_tokens.weight": mat(V, C, 1), "model.norm.weight": np.ones(C, "<f4")}
for l in range(L):
    p = f"model.layers.{l}."
    t[p + "input_layernorm.weight"] = np.ones(C, "<f4")
    t[p + "post_attention_layernorm.weight"] = np.ones(C, "<f4")
    t[p + "self_attn.q_proj.weight"] = mat(H * D, C, C)
    t[p + "self_attn.k_proj.weight"] = mat(KH * D, C, C)
    t[p + "self_attn.v_proj.weight"] = mat(KH * D, C, C)
    t[p + "self_attn.o_proj.weight"] = mat(C, H * D, H * D)
    t[p + "mlp.gate_proj.weight"] = mat(I, C, C)
    t[p + "mlp.up_proj.weight"] = mat(I, C, C)
    t[p + "mlp.down_proj.weight"] = mat(C, I, I)
header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
for name, a in t.items():
    b = a.tobytes()
    header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
import os
os.makedirs(f"{w}/teacher")
with open(f"{w}/teacher/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
json.dump(config, open(f"{w}/teacher/config.json", "w"), indent=2)
words = ["the", "cache", "teacher", "student", "Ünïcode", "42", "tokens", "run", "slurm", "array"]
with open(f"{w}/corpus.jsonl", "w") as f:
    for d in range(60):
        text = f"Document {d}: " + " ".join(words[(i * 7 + d) % len(words)] for i in range(20 + d * 11 % 50)) + "."
        f.write(json.dumps({"text": text}) + "\n")
PY
TEACHER_ARGS="--context 32 --top-k 8 --block-tokens 64 --shard-size 4K"

echo "== single-process reference"
"$LOGITCACHE" teacher --model "$W/teacher" --tokenizer "$TOKENIZER" --corpus "$W/corpus.jsonl" --out "$W/single" \
    --threads 1 $TEACHER_ARGS > "$W/logs/single.log" 2>&1

echo "== slurmctld + slurmd on $NODE (127.0.0.1)"
cat > "$W/slurm.conf" <<CONF
ClusterName=logitcache-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/logs/slurmctld.log
SlurmdLogFile=$W/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$W/slurm.conf
slurmctld -D -f "$SLURM_CONF" > "$W/logs/slurmctld.out" 2>&1 & PIDS+=($!)
slurmd -D -f "$SLURM_CONF" > "$W/logs/slurmd.out" 2>&1 & PIDS+=($!)
for i in $(seq 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 1
done
if [ "${state:-}" != idle ]; then
    echo "test_local_slurm: node not idle after 60 s (state '${state:-none}')" >&2
    tail -20 "$W"/logs/*.log "$W"/logs/*.out >&2 || true
    exit 1
fi

echo "== sbatch: 4-task teacher array, then merge (afterok)"
cd "$W"
export MODEL=$W/teacher TOKENIZER CORPUS=$W/corpus.jsonl OUT=$W/array LOGITCACHE TEACHER_ARGS
jid=$(sbatch --parsable --array=0-3 --cpus-per-task=1 "$ROOT/tools/slurm/teacher_array.sbatch")
mid=$(sbatch --parsable --dependency=afterok:"$jid" "$ROOT/tools/slurm/merge.sbatch")
echo "array job $jid, merge job $mid"
job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | sort -u | tr '\n' ' '; }
for i in $(seq 300); do
    s=$(job_state "$mid")
    case "$s" in
        "COMPLETED ") break ;;
        *FAILED*|*CANCELLED*|*TIMEOUT*) break ;;
    esac
    if scontrol show job "$mid" 2>/dev/null | grep -q DependencyNeverSatisfied; then s="dependency never satisfied"; break; fi
    sleep 1
done
echo "array tasks: $(job_state "$jid")  merge: $s"
for f in logitcache-teacher-*.out logitcache-merge-*.out; do echo "--- $f"; cat "$f"; done
[ "$s" = "COMPLETED " ] || { echo "test_local_slurm: FAILED (merge job state: $s)" >&2; exit 1; }

echo "== merged array cache vs single-process cache"
"$LOGITCACHE" verify "$W/array" > /dev/null
ls "$W/array" | grep -c 'manifest.part-' | xargs echo "partition manifests:"
"$LOGITCACHE" dump "$W/single" --json > "$W/single.dump"
"$LOGITCACHE" dump "$W/array" --json > "$W/array.dump"
if cmp -s "$W/single.dump" "$W/array.dump"; then
    echo "test_local_slurm: OK — $(wc -l < "$W/array.dump") sequences, every decoded value equal to the single-process run"
else
    echo "test_local_slurm: FAILED — merged cache content differs from the single-process run" >&2
    diff "$W/single.dump" "$W/array.dump" | head -5 >&2
    exit 1
fi
