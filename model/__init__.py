"""News-article classifier: one encoder, one head per task (topic, framing, ...).

    from model import load_classifier, predict
    clf = load_classifier("runs/bbc_topic/model")
    clf.predict("Shares in the bank rose 5% after ...")     # -> dict
    predict(["text one", "text two"], model="runs/bbc_topic/model")  # -> list of dicts
"""

from model.core.artifact import ArtifactError, build_network, load_artifact, save_artifact
from model.core.config import ModelConfig
from model.core.network import ArticleClassifierNetwork
from model.core.tasks import MULTI_LABEL, SINGLE_LABEL, TaskSpec
from model.core.text import EncodedArticle, chunk_articles, clean_text
from model.inputs.records import InputRecord, iter_articles, record_text
from model.runtime.classifier import ArticleClassifier
from model.runtime.loading import load_classifier, predict

__version__ = "0.1.0"

__all__ = [
    "ArticleClassifier", "ArticleClassifierNetwork", "ArtifactError", "EncodedArticle",
    "InputRecord", "ModelConfig", "MULTI_LABEL", "SINGLE_LABEL", "TaskSpec", "build_network",
    "chunk_articles", "clean_text", "iter_articles", "load_artifact", "load_classifier",
    "predict", "record_text", "save_artifact",
]
