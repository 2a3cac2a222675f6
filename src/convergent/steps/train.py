"""Rule `train`: train one seed's network; resumes from its last epoch if a previous job died."""

import json
from pathlib import Path

from convergent.config import config_hash
from convergent.data import load_dataset
from convergent.outputs import atomic_output
from convergent.progress import RateLog
from convergent.training import atomic_save, checkpoint_payload, train_model


def resume_path_for(model_path) -> Path:
    model_path = Path(model_path)
    return model_path.parent / ".resume" / model_path.name


def main(inputs, outputs, params, log):
    seed = int(params.seed)
    splits = load_dataset(params.dataset, augment_imagefolder=params.train["augment"] != "none")
    fingerprint = config_hash({"train": params.train, "dataset": params.dataset, "model": params.model, "seed": seed})
    resume = resume_path_for(outputs.model)
    model, metrics = train_model(params.model, splits, params.train, seed, resume, fingerprint,
                                 progress=RateLog(f"train seed {seed}, batches over all epochs"))
    metrics["trained"] = True
    atomic_save(checkpoint_payload(model, params.model, splits, seed, metrics), outputs.model)
    with atomic_output(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    resume.unlink(missing_ok=True)
    print(f"seed {seed}: held-out accuracy {metrics['heldout_accuracy']:.4f} "
          f"in {metrics['seconds']:.1f} s")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821 (injected by Snakemake's script directive)
