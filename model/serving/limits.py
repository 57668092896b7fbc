"""The prediction service's request limits (`serve --max-...`), checked when they are set:
limits the service cannot work under are refused with a message naming the option, before
any model is loaded, rather than showing up later as failed requests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceLimits:
    """Request limits of the service; each breach gets its own clear status code."""

    max_body_bytes: int = 10 * 1024 * 1024   # 413 beyond
    max_articles: int = 256                  # per request; 422 beyond
    max_article_chars: int = 2_000_000       # per article; 422 beyond (longer ones are chunked)
    max_batch_articles: int = 64             # per forward pass
    batch_wait_ms: float = 5.0               # how long a request waits for company
    max_queue: int = 2048                    # articles waiting; 503 beyond
    max_profile_groups: int = 500            # distinct groups of a /profile; 422 beyond

    def __post_init__(self):
        """Refuse limits the service cannot work under, naming the `serve` option: a pass
        of 0 articles fails every /predict (500), and a queue shorter than a request the
        service accepts refuses such requests for ever (503)."""
        for name in ("max_body_bytes", "max_articles", "max_article_chars",
                     "max_batch_articles", "max_queue", "max_profile_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{option(name)} must be at least 1, got {getattr(self, name)}")
        if not self.batch_wait_ms >= 0:  # also refuses NaN
            raise ValueError(f"{option('batch_wait_ms')} must be 0 or more, got "
                             f"{self.batch_wait_ms}")
        if self.max_queue < self.max_articles:
            raise ValueError(f"{option('max_queue')} ({self.max_queue}) must be at least "
                             f"{option('max_articles')} ({self.max_articles}): a request of "
                             "that many articles could never be queued")


def option(field: str) -> str:
    """The `serve` option that sets a ServiceLimits field (the field's name where `serve`
    has none), so the message names what the user typed."""
    return field if field == "max_article_chars" else "--" + field.replace("_", "-")
