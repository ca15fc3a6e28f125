#!/bin/sh
# One-shot training job of the trainer image (docker-compose `trainer`, the
# Kubernetes CronJob): train the coarse and the fine stage jointly (booster +
# light net) and export both light nets into the model repository, where the
# service's hot reload picks them up.
#
# With no log in $DATA_DIR it first writes a synthetic one (`rocketrank synth`),
# so `docker compose up` works out of the box; SYNTHESIZE_IF_EMPTY=0 (the
# Kubernetes CronJob) makes a missing log an error instead.
#
# Environment (all optional):
#   DATA_DIR     log directory: the schema's train/valid/test files,
#                users.parquet, items.parquet             (default /data)
#   RUNS_DIR     training runs (checkpoints, metrics)      (default /runs)
#   MODEL_REPO   model repository                          (default /models)
#   STAGES       stages to train, in order                 (default "coarse fine")
#   TRAIN_EPOCHS epochs per stage                          (default 2)
#   SYNTHESIZE_IF_EMPTY  1: synthesise a log when none exists, 0: fail (default 1)
#   SYNTH_ROWS   rows of the synthetic log if none exists  (default 200000)
#   KEEP_VERSIONS versions kept per model after export     (default 5)
set -eu

DATA_DIR="${DATA_DIR:-/data}"
RUNS_DIR="${RUNS_DIR:-/runs}"
MODEL_REPO="${MODEL_REPO:-/models}"
STAGES="${STAGES:-coarse fine}"
TRAIN_EPOCHS="${TRAIN_EPOCHS:-2}"
SYNTHESIZE_IF_EMPTY="${SYNTHESIZE_IF_EMPTY:-1}"
SYNTH_ROWS="${SYNTH_ROWS:-200000}"
KEEP_VERSIONS="${KEEP_VERSIONS:-5}"
CONFIG_DIR="${CONFIG_DIR:-/app/configs}"

if [ ! -f "$DATA_DIR/items.parquet" ]; then
    if [ "$SYNTHESIZE_IF_EMPTY" != "1" ]; then
        echo "train_and_export: no log in $DATA_DIR (items.parquet missing)" >&2
        exit 2
    fi
    echo "no log in $DATA_DIR: writing a synthetic one ($SYNTH_ROWS rows)"
    rocketrank synth --out "$DATA_DIR" --rows "$SYNTH_ROWS"
fi
rocketrank data check --data "$DATA_DIR"

for stage in $STAGES; do
    run="$RUNS_DIR/$stage-$(date -u +%Y%m%dT%H%M%SZ)"
    rocketrank train --config "$CONFIG_DIR/${stage}_ctr.yaml" --data "$DATA_DIR" \
        --out "$run" --epochs "$TRAIN_EPOCHS"
    rocketrank export --run "$run" --repo "$MODEL_REPO" --name "$stage" \
        --items "$DATA_DIR/items.parquet" --keep "$KEEP_VERSIONS"
done
rocketrank models list --repo "$MODEL_REPO"
