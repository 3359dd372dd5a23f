#!/bin/bash
# usage: tries/run_try.sh NAME [flags...]  — one screening try, timed, log in tries/NAME.log
name=$1; shift
cd /work/wt-defaults
S='{"ddim_50": {"sampler": "ddim", "steps": 50, "clip_x0": 1.0}, "dpm_solver_10": {"sampler": "dpm_solver", "steps": 10, "clip_x0": 1.0}, "dpm10_o3": {"sampler": "dpm_solver", "steps": 10, "order": 3, "clip_x0": 1.0}}'
start=$(date +%s)
/usr/bin/time -v python -m pipeline.run --runner=DirectRunner --output_dir=runs/try_$name --samplers="$S" \
  --num_samples=500 --sample_batch_size=500 --trajectory_samples=0 --stages=ingest,train,sample,evaluate "$@" > tries/$name.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start )) s" >> tries/$name.log
