#!/bin/bash
# runs the queued tries one after another (2 shared cores: never two at once)
cd /work/wt-defaults
while [ -n "$(pgrep -f 'tries/run_try.sh t3_')" ]; do sleep 5; done
tries/run_try.sh t4_s3000_ema999_nodecay --train_steps=3000 --ema_decay=0.999 --lr_decay=false
tries/run_try.sh t5_s3000_ema995_decay --train_steps=3000 --ema_decay=0.995 --lr_decay=true
tries/run_try.sh t6_s3000_cosine_ema999_decay --train_steps=3000 --ema_decay=0.999 --lr_decay=true --schedule=cosine
tries/run_try.sh t0_baseline_e50_ema995 --epochs=50 --ema_decay=0.995 --lr_decay=false
