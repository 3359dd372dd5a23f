#!/bin/bash
cd /work/wt-defaults
while [ -n "$(pgrep -f 'tries/queue2.sh')" ]; do sleep 5; done
start=$(date +%s)
python -m pipeline.run --runner=DirectRunner --dataset=folder:runs/fashion300 --channels=1 --output_dir=runs/fashion300_gray > tries/fashion300_gray.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start )) s" >> tries/fashion300_gray.log
