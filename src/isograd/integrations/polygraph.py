"""isograd's gradient-norm uncertainty as LM-Polygraph estimators (``pip install isograd[polygraph]``).

LM-Polygraph's `UEManager` runs stat calculators, then estimators, batch by batch on its own
`WhiteboxModel`. This module adds one stat calculator, `IsogradCalculator`, which scores each
greedy generation of the batch (LM-Polygraph's ``greedy_tokens``) with `isograd.lm.score`, and
estimators that read its statistics:

| estimator | statistic | value (higher = more uncertain) |
| --- | --- | --- |
| `IsogradEpistemic` | ``isograd_epistemic`` | σ²·‖∇θ p‖² (or layer-scaled, see ``covariance``) |
| `IsogradEpistemicLayerScaled` | ``isograd_epistemic_layer_scaled`` | σ²·Σ_l s_l‖∇_l p‖² |
| `IsogradAleatoric` | ``isograd_aleatoric`` | p(1−p) |
| `IsogradTotal` | ``isograd_total`` | epistemic + aleatoric (law of total variance) |
| `IsogradGradLogP` | ``isograd_grad_log_p`` | ‖∇θ log p‖² (no p² factor) |
| `IsogradEpistemicLastLayers` | ``isograd_epistemic_last_layers`` | σ²·‖∇p‖² over the last 5 blocks |
| `IsogradEmbeddingGrad` | ``isograd_embedding_grad`` | ‖∂ log p/∂e‖² over the input embeddings |

All come from the same forward and backward per batch (`isograd.lm.LMScores` defines each); a
signal the model does not support (no recognised blocks, no input embedding) is NaN.

isograd's rank-mean ``combined`` score ranks a whole run, so it is no per-batch estimator:
compute it from the two estimations after the run (`isograd.evaluate`).

What is scored: the prompt is exactly the token ids LM-Polygraph's ``WhiteboxModel.tokenize``
gives the input text (chat template when ``instruct=True``), the answer is the generated tokens
without a trailing end-of-sequence token (isograd's convention: the stop token is not part of
the answer; ``include_eos=True`` keeps it, as LM-Polygraph's own ``greedy_log_likelihoods`` do).

Usage::

    from lm_polygraph.defaults.register_default_stat_calculators import (
        register_default_stat_calculators)
    from isograd.integrations.polygraph import estimators, stat_calculators

    calcs = register_default_stat_calculators("Whitebox") + stat_calculators()
    man = UEManager(data, model, [MaximumSequenceProbability(), *estimators()],
                    BuilderEnvironmentStatCalculator(model), calcs, [], [], [])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    import numpy as np
    from lm_polygraph.estimators.estimator import Estimator
    from lm_polygraph.stat_calculators.stat_calculator import StatCalculator
    from lm_polygraph.utils.factory_stat_calculator import StatCalculatorContainer
except ImportError as e:  # the extra is optional: say how to get it
    raise ImportError(
        "isograd.integrations.polygraph needs LM-Polygraph: pip install 'isograd[polygraph]' "
        f"(import failed: {e})"
    ) from e

from ..layer_scale import Covariance, LayerScale
from ..lm.prompts import encode_prompt
from ..lm.score import Prediction, score
from ..norms.api import Method

STATS = ("isograd_p", "isograd_log_p", "isograd_epistemic", "isograd_aleatoric", "isograd_total",
         "isograd_epistemic_layer_scaled", "isograd_grad_log_p", "isograd_epistemic_last_layers",
         "isograd_embedding_grad")
"""Statistics `IsogradCalculator` adds to LM-Polygraph's batch stats, float64 arrays [B]."""


def prompt_text(model: Any, text: str | list[dict[str, str]]) -> str:
    """The prompt string whose isograd encoding (no added special tokens) is exactly the token
    ids ``model.tokenize([text])`` feeds LM-Polygraph's generation.

    Args:
        model: an LM-Polygraph ``WhiteboxModel`` (``.tokenizer``, ``.instruct``, ``.tokenize``).
        text: one input text (or chat) as LM-Polygraph receives it.

    Raises:
        ValueError: no candidate string reproduces the ids (a tokenizer that adds tokens
            other than BOS); the message shows both encodings.
    """
    tok = model.tokenizer
    want = [int(t) for t in model.tokenize([text])["input_ids"][0]]
    if getattr(model, "instruct", False):
        chat = [{"role": "user", "content": text}] if isinstance(text, str) else text
        candidates = [tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)]
    else:
        candidates = [text, f"{tok.bos_token or ''}{text}"]
    for c in candidates:
        if encode_prompt(tok, c) == want:
            return c
    raise ValueError(f"cannot reproduce LM-Polygraph's prompt ids {want[:8]}... for {text!r} "
                     f"(isograd encodes {encode_prompt(tok, candidates[0])[:8]}...)")


class IsogradCalculator(StatCalculator):
    """Scores LM-Polygraph's greedy generations with `isograd.lm.score` (module docstring).

    Args:
        prediction: what p is, "geometric" (default) | "sequence" | "first_token".
        sigma2: isotropic parameter variance σ².
        method: norm engine, "auto" | "loop" | "ghost".
        covariance: which epistemic term is ``isograd_epistemic`` (and in the total):
            "isotropic" (default) | "layer-scaled".
        layer_scale: rule of the layer-scaled covariance, "weight-variance" | "fan-in".
        batch_size: pairs per isograd scoring pass.
        include_eos: score a trailing end-of-sequence token as part of the answer.
    """

    @staticmethod
    def meta_info() -> tuple[list[str], list[str]]:
        """(statistics produced, statistics needed)."""
        return list(STATS), ["greedy_tokens"]

    def __init__(self, prediction: str = "geometric", sigma2: float = 1.0, method: str = "auto",
                 covariance: str = "isotropic", layer_scale: str = "weight-variance",
                 batch_size: int = 8, include_eos: bool = False):
        super().__init__()
        self.prediction = Prediction.parse(prediction).value
        self.method = Method.parse(method).value
        self.covariance = Covariance.parse(covariance).value
        self.layer_scale = LayerScale.parse(layer_scale).value
        if sigma2 < 0:
            raise ValueError(f"sigma2 must be >= 0, got {sigma2}")
        self.sigma2 = float(sigma2)
        self.batch_size = int(batch_size)
        self.include_eos = bool(include_eos)

    def __str__(self) -> str:
        return (f"IsogradCalculator({self.prediction}, {self.covariance}, "
                f"sigma2={self.sigma2:g})")

    def answer_ids(self, tokens: Sequence[int], eos_id: int | None) -> list[int]:
        """The generated tokens to score: without a trailing EOS unless it is the only one."""
        ids = [int(t) for t in tokens]
        if not self.include_eos and len(ids) > 1 and eos_id is not None and ids[-1] == eos_id:
            ids = ids[:-1]
        return ids

    def __call__(self, dependencies: dict[str, Any], texts: list[str], model: Any,
                 max_new_tokens: int = 100, **kwargs: Any) -> dict[str, np.ndarray]:
        """Statistics [B] for the batch: see `STATS`."""
        tok = model.tokenizer
        prompts = [prompt_text(model, t) for t in texts]
        answers = [self.answer_ids(g, tok.eos_token_id) for g in dependencies["greedy_tokens"]]
        s = score(model.model, tok, prompts, answers, prediction=self.prediction,
                  sigma2=self.sigma2, method=self.method, covariance=self.covariance,
                  layer_scale=self.layer_scale, batch_size=self.batch_size)
        nan = np.full(len(answers), np.nan)
        return {f"isograd_{k}": nan if getattr(s, k) is None else getattr(s, k).numpy()
                for k in (n.removeprefix("isograd_") for n in STATS)}


def load_stat_calculator(config: Any, environment: Any = None) -> IsogradCalculator:
    """Builder hook of LM-Polygraph's ``FactoryStatCalculator`` (``builder=`` this module)."""
    return IsogradCalculator(**{k: v for k, v in dict(config).items() if k != "obj"})


def stat_calculators(**options: Any) -> list[StatCalculatorContainer]:
    """LM-Polygraph registrations of `IsogradCalculator` with `options` (its arguments):
    append them to ``register_default_stat_calculators(...)`` and pass to `UEManager`."""
    IsogradCalculator(**options)  # validate the options now, not inside the manager's loop
    stats, deps = IsogradCalculator.meta_info()
    return [StatCalculatorContainer(name="IsogradCalculator", builder=__name__, cfg=dict(options),
                                    stats=stats, dependencies=deps)]


class _IsogradEstimator(Estimator):
    stat = ""
    name = ""

    def __init__(self) -> None:
        super().__init__([self.stat], "sequence")

    def __str__(self) -> str:
        return self.name

    def __call__(self, stats: dict[str, Any]) -> np.ndarray:
        return np.asarray(stats[self.stat], dtype=np.float64)


def _estimator(name: str, stat: str, doc: str) -> type[_IsogradEstimator]:
    return type(name, (_IsogradEstimator,), {"stat": stat, "name": name, "__doc__": doc,
                                              "__module__": __name__})


IsogradEpistemic = _estimator("IsogradEpistemic", "isograd_epistemic",
                              "Epistemic σ²·‖∇θ p‖² of the greedy generation (arXiv 2603.29466).")
IsogradEpistemicLayerScaled = _estimator(
    "IsogradEpistemicLayerScaled", "isograd_epistemic_layer_scaled",
    "Epistemic term under the data-free layer-scaled covariance (`isograd.layer_scale`).")
IsogradAleatoric = _estimator("IsogradAleatoric", "isograd_aleatoric",
                              "Aleatoric p(1−p) of the greedy generation.")
IsogradTotal = _estimator("IsogradTotal", "isograd_total",
                          "Total = epistemic + aleatoric of the greedy generation.")
IsogradGradLogP = _estimator("IsogradGradLogP", "isograd_grad_log_p",
                             "‖∇θ log p‖² of the greedy generation (no p² factor).")
IsogradEpistemicLastLayers = _estimator(
    "IsogradEpistemicLastLayers", "isograd_epistemic_last_layers",
    "σ²·‖∇p‖² restricted to the last transformer blocks' parameters.")
IsogradEmbeddingGrad = _estimator("IsogradEmbeddingGrad", "isograd_embedding_grad",
                                  "‖∂ log p/∂e‖² with respect to the input embeddings.")

ESTIMATORS = (IsogradEpistemic, IsogradEpistemicLayerScaled, IsogradAleatoric, IsogradTotal,
              IsogradGradLogP, IsogradEpistemicLastLayers, IsogradEmbeddingGrad)
"""Every isograd estimator class, in table order."""


def estimators() -> list[Estimator]:
    """One instance of each isograd estimator (`ESTIMATORS`)."""
    return [cls() for cls in ESTIMATORS]
