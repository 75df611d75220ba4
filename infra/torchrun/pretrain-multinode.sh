#!/usr/bin/env bash
# Multi-node BERT pretraining with torchrun, without a scheduler: run this same script on every
# node (same options, NODE_RANK 0..NNODES-1). torchrun starts one process per GPU and they meet
# at MASTER_ADDR:MASTER_PORT (c10d rendezvous); Lightning reads torchrun's environment for the
# ranks. When training reaches max_steps, global rank 0 exports the model and publishes it.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: NNODES=N NODE_RANK=R MASTER_ADDR=HOST SHARDS_ID=ID BERTFLOW_STORE=URL RUN_DIR=DIR \
           infra/torchrun/pretrain-multinode.sh [training options...]

Run on every node, with the same values except NODE_RANK.

required:
  NNODES          number of nodes
  NODE_RANK       this node's rank, 0..NNODES-1 (informational with c10d: torchrun assigns ranks)
  MASTER_ADDR     host every node can reach, where the rendezvous is served (usually node 0)
  SHARDS_ID       the shards artifact to train on
  BERTFLOW_STORE  the artifact store: s3://... or a folder every node mounts
  RUN_DIR         checkpoints and logs, on a filesystem every node mounts (one per config)
optional:
  MASTER_PORT     rendezvous port (29500)
  GPUS_PER_NODE   processes per node (default: the GPUs nvidia-smi lists)
  RDZV_ID         rendezvous id, the same on every node of one job (bertflow)
  PRESET (base), BATCH_SIZE (32, per GPU), LR (1e-4), MAX_STEPS (1000000),
  WARMUP_STEPS (10000), ACCUMULATE (1), NUM_WORKERS (4)

Options after the script name go to `python -m bertflow.model.training` last, so they override the
ones above. --resume is always passed: a first run starts fresh, a restarted one continues from
RUN_DIR/checkpoints/last.ckpt.
EOF
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi

missing=()
for name in NNODES NODE_RANK MASTER_ADDR SHARDS_ID BERTFLOW_STORE RUN_DIR; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
done
if ((${#missing[@]})); then
    usage >&2
    echo >&2
    echo "pretrain-multinode.sh: missing ${missing[*]}" >&2
    exit 2
fi
[[ "$RUN_DIR" == /* ]] || { echo "pretrain-multinode.sh: RUN_DIR must be absolute" >&2; exit 2; }

if [[ -z "${GPUS_PER_NODE:-}" ]]; then
    GPUS_PER_NODE=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
    ((GPUS_PER_NODE > 0)) || {
        echo "pretrain-multinode.sh: no GPUs found by nvidia-smi; set GPUS_PER_NODE" >&2
        exit 2
    }
fi
command -v torchrun >/dev/null || {
    echo "pretrain-multinode.sh: torchrun not found: activate the environment with bertflow" >&2
    exit 2
}
mkdir -p "$RUN_DIR"
export BERTFLOW_STORE

exec torchrun \
    --nnodes "$NNODES" \
    --nproc-per-node "$GPUS_PER_NODE" \
    --node-rank "$NODE_RANK" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" \
    --rdzv-id "${RDZV_ID:-bertflow}" \
    --max-restarts 0 \
    -m bertflow.model.training \
    --shards "$SHARDS_ID" \
    --store "$BERTFLOW_STORE" \
    --run-dir "$RUN_DIR" \
    --resume \
    --accelerator gpu \
    --devices "$GPUS_PER_NODE" \
    --num-nodes "$NNODES" \
    --strategy ddp \
    --precision bf16-mixed \
    --preset "${PRESET:-base}" \
    --batch-size "${BATCH_SIZE:-32}" \
    --lr "${LR:-1e-4}" \
    --max-steps "${MAX_STEPS:-1000000}" \
    --warmup-steps "${WARMUP_STEPS:-10000}" \
    --accumulate "${ACCUMULATE:-1}" \
    --num-workers "${NUM_WORKERS:-4}" \
    "$@"
