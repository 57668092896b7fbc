"""Per-source profiles: for each value of a field (a news source), the share of its
articles that carry each label of a task, corrected for the classifier's errors, with
intervals that carry them; over time (`over`) and outlet against outlet (compare.py).

    article-classifier predict MODEL articles.tsv --id-column ID --keep source,date -o pred.jsonl
    article-classifier profile pred.jsonl --by source --model MODEL --out profile/

reading.py reads prediction lines, tally.py counts them in bounded memory, quantify.py
estimates the shares, compare.py differences them, output.py writes the files. The
command (model/cli.py) and the service's /profile (model/serving/profile_api.py) both go
through `profile_predictions`, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.core.heldout import check_heldout
from model.profiles.quantify import DEFAULT_METHOD, DRAWS, Estimates, estimate
from model.profiles.tally import MAX_GROUPS, Tally, tally_predictions


@dataclass
class Profile:
    tally: Tally
    estimates: Estimates

    @property
    def rows(self) -> list[dict]:
        return self.estimates.rows


def profile_predictions(lines, by: str, task: str = "frames", labels=None,
                        heldout: dict | None = None, method: str = DEFAULT_METHOD,
                        over: str | None = None, domain: str = "keep", draws: int = DRAWS,
                        max_groups: int = MAX_GROUPS, seed: int = 0,
                        keep_replicates: bool = False) -> Profile:
    """Tally prediction `lines` (dicts) per value of `by` (and period, `over`) and estimate
    each group's share of each label by `method`. `labels`/`heldout`: the model's labels
    of `task` and its stored held-out error estimates (model/core/heldout.py), where known.
    """
    tally = tally_predictions(lines, by, task, labels, over, domain, max_groups)
    if heldout is not None and labels is not None:
        heldout = dict(heldout, labels=list(labels))
    return Profile(tally, estimate(tally, method, heldout, draws, seed,
                                   keep_replicates=keep_replicates))


def model_task(model_dir, task: str) -> tuple[list[str], dict | None]:
    """The labels and the held-out error estimates of `task` in a model artifact, read
    from its config.json alone (no network is loaded)."""
    from model.core.artifact import read_artifact_config

    tasks = {t["name"]: t for t in read_artifact_config(model_dir).get("tasks", [])}
    if task not in tasks:
        raise ValueError(f"{model_dir}: no task {task!r} (its tasks: {', '.join(tasks)})")
    labels, heldout = list(tasks[task]["labels"]), tasks[task].get("heldout")
    try:
        check_heldout(heldout, len(labels))
    except ValueError as err:
        raise ValueError(f"{model_dir}/config.json: task {task!r}: {err}") from None
    return labels, heldout
