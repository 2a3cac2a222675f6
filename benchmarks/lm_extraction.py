"""Benchmark: time and memory of extracting and correlating a language model's hidden states.

Issue #11 asks that five BERT-base seeds (13 hidden states of 768 units) at the MultiBERTs
preset's token count extract and correlate on a 24 GiB machine. This script measures, in one run
and on one random-weight BERT built from its configuration (no hub needed):

* **extraction**, against the plain forward passes over the same batches with every hidden state
  returned (the reference, timed interleaved with it): time ratio and the process's peak resident
  memory (ratio to the forward passes' peak), for float16 and float32 storage, and the file size;
* **correlation** (`correlate`: one streamed pass over every seed's rows of a layer), against a
  plain ``X.T @ X`` of the same joint rows in float64 (the least any covariance costs): time ratio,
  and peak memory against the joint covariance matrix it must hold, for ``--seeds`` networks at
  the preset's row count (synthetic rows in the activation-file format: its cost does not depend
  on the values);

then extrapolates to the preset (2,000 passages, 10 positions each, 5 seeds) and prints the
largest peak against 24 GiB. Memory is the process's resident set, sampled every 5 ms.

    PYTHONPATH=src python benchmarks/lm_extraction.py [--passages 64 --length 128 --batch 16 --hidden 768 --repeats 2
        --blocks 12 --threads 2 --seeds 5 --rows 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from convergent.correlation import joint_layer_statistics
from convergent.huggingface import layer_specs
from convergent.probing import resolve_probes
from convergent.text import TextProbe
from convergent.text_extraction import extract_text_activations

GIB = 1024 ** 3
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The process's peak resident set (``peak``) and its rise above the level at entry
    (``above``), sampled from /proc every 5 ms."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def above(self) -> int:
        return self.peak - self.start

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE


def random_probe(passages: int, length: int, vocab: int, rng) -> TextProbe:
    """Passages of 60-100 % of ``length`` real tokens, [CLS] first and [SEP] last, padded."""
    ids = np.zeros((passages, length), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i in range(passages):
        n = int(rng.integers(int(0.6 * length), length + 1))
        ids[i, :n] = rng.integers(5, vocab, size=n)
        ids[i, 0], ids[i, n - 1] = 2, 3
        mask[i, :n] = 1
    valid = mask.astype(bool)
    valid[:, 0] = False
    valid[np.arange(passages), mask.sum(1) - 1] = False
    tokens = [[f"t{t}" for t in row] for row in ids]
    return TextProbe([f"passage {i}" for i in range(passages)], np.arange(passages), ids, mask, valid, tokens,
                     np.zeros(passages, dtype=np.int64))


def synthetic_file(path: Path, rows: int, units: int, layer: str, rng) -> None:
    """One layer of one network in the activation-file format the extractor writes (float16, chunked)."""
    chunk = max(1, min(rows, (1 << 20) // (units * 2)))
    with h5py.File(path, "w") as h5:
        h5.attrs["layers"] = [layer]
        h5.create_dataset("probe/image_index", data=np.arange(rows // 10))
        group = h5.create_group(f"layers/{layer}")
        data = group.create_dataset("samples", shape=(rows, units), dtype=np.float16, chunks=(chunk, units),
                                    compression="lzf")
        for start in range(0, rows, 4096):
            stop = min(rows, start + 4096)
            data[start:stop] = rng.normal(size=(stop - start, units)).astype(np.float16)
        group.create_dataset("positions", data=np.stack([np.arange(rows) // 10, np.arange(rows) % 10,
                                                         np.zeros(rows, dtype=np.int64)], axis=1))
        group.attrs.update({"kind": "tokens", "signed": True, "shape": (units, 128, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5, help="networks correlated jointly")
    parser.add_argument("--rows", type=int, default=20000, help="token rows per layer correlated (the preset's)")
    parser.add_argument("--preset-passages", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import BertConfig, BertModel

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=args.hidden, num_hidden_layers=args.blocks,
                        num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
                        max_position_embeddings=max(512, args.length), output_hidden_states=True)
    model = BertModel(config).eval()
    probe = random_probe(args.passages, args.length, config.vocab_size, rng)
    specs = layer_specs(None, args.blocks)
    probes = resolve_probes(model, specs, probe.batch(0, 2), None, mode="hooks")
    probes = {s.name: probes[s.name] for s in specs}  # hidden states come with the output: keep their order
    print(f"BERT {args.blocks} blocks x {args.hidden} units (random weights), {len(probes)} hidden states, "
          f"{args.passages} passages of {args.length} tokens, batch {args.batch}, {args.threads} threads")

    def forward():
        with torch.no_grad():
            for start in range(0, len(probe), args.batch):
                model(**probe.batch(start, min(len(probe), start + args.batch)))

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        forward()  # warm-up
        runs = {"plain forward": forward}
        for dtype in ("float16", "float32"):
            cfg = {"dtype": dtype, "batch_size": args.batch, "positions_per_image": args.positions,
                   "position_seed": 0, "top_k": 9}
            runs[f"extract {dtype}"] = (lambda cfg=cfg: extract_text_activations(
                model, probe, probes, tmp / f"{cfg['dtype']}.h5", cfg, {"seed": 0}, torch.device("cpu")))
        # One run after another, not interleaved: the resident peak is the process's, and
        # interleaving would lend one run's peak to the next (the forward passes go first).
        for name, run in runs.items():
            times = []
            for _ in range(args.repeats):
                with PeakMemory() as memory:
                    began = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - began)
            results[name] = (statistics.median(times), memory.peak)
        reference_time, reference_memory = results["plain forward"]
        print("extraction (reference: the plain forward passes)")
        for name, (seconds, peak) in results.items():
            size = (tmp / f"{name.split()[-1]}.h5").stat().st_size if name.startswith("extract") else 0
            print(f"  {name:16s} {seconds:7.2f} s  {seconds / reference_time:5.2f}x   peak RSS {peak / 2**20:7.1f} MiB "
                  f"({peak / reference_memory:5.2f}x)" + (f"   file {size / 2**20:6.1f} MiB" if size else ""))
        file_per_passage = (tmp / "float16.h5").stat().st_size / args.passages

        # Correlation: every seed's rows of one layer, streamed.
        layer, units = "hidden_states.6", args.hidden
        paths = [tmp / f"seed{s}.h5" for s in range(args.seeds)]
        for path in paths:
            synthetic_file(path, args.rows, units, layer, rng)
        with PeakMemory() as memory:
            began = time.perf_counter()
            joint_layer_statistics(paths, list(range(args.seeds)), layer)
            correlate_time = time.perf_counter() - began
        correlate_peak = memory.above
        joint = np.hstack([h5py.File(p)["layers"][layer]["samples"][()].astype(np.float64) for p in paths])
        began = time.perf_counter()
        centred = joint - joint.mean(axis=0)
        _ = centred.T @ centred
        gram_time = time.perf_counter() - began
        del joint, centred
    cov_bytes = (args.seeds * units) ** 2 * 8
    print(f"correlation of {args.seeds} seeds x {units} units, {args.rows:,} rows (reference: X.T @ X in float64)")
    print(f"  streamed statistics {correlate_time:7.2f} s  {correlate_time / gram_time:5.2f}x   peak "
          f"+{correlate_peak / 2**20:7.1f} MiB ({correlate_peak / cov_bytes:5.2f}x one {cov_bytes / 2**20:.0f} MiB "
          "covariance matrix)")

    # The preset: extraction memory does not grow with the passages (batches, top-k records);
    # the file does, linearly; correlation holds a few joint matrices and one chunk of rows.
    preset_file = file_per_passage * args.preset_passages
    extract_peak = results["extract float16"][1]
    print(f"preset ({args.preset_passages:,} passages, {args.positions} positions, {args.seeds} seeds): "
          f"activation file ~{preset_file / 2**20:,.0f} MiB per seed; peak RSS ~{extract_peak / GIB:.2f} GiB "
          f"extracting (the whole process), +{correlate_peak / GIB:.2f} GiB correlating one layer "
          f"(largest {max(extract_peak, correlate_peak) / (24 * GIB):.1%} of 24 GiB)")


if __name__ == "__main__":
    main()
