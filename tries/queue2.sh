#!/bin/bash
# after the tries: the folder proof, the shipped model, the default run from a clean state (one at a time)
cd /work/wt-defaults
while [ ! -e tries/go ]; do sleep 5; done
while [ -n "$(pgrep -f 'tries/queue.sh')" ]; do sleep 5; done
start=$(date +%s)
/usr/bin/time -v python -m pipeline.run --runner=DirectRunner --dataset=folder:runs/fashion300 --output_dir=runs/fashion300_default > tries/fashion300_default.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start )) s" >> tries/fashion300_default.log
start=$(date +%s)
/usr/bin/time -v python -m kdiff.digits --out saved_models/ddpm_digits > tries/shipped_model.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start )) s" >> tries/shipped_model.log
rm -rf runs/default
start=$(date +%s)
/usr/bin/time -v python -m pipeline.run --runner=DirectRunner > tries/default_run.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start )) s" >> tries/default_run.log
