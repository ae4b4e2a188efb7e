"""Every option Enum shares `Choice.parse`: members and their strings parse, anything else
raises a ValueError that names the option and lists every allowed value."""

from __future__ import annotations

import pytest

from isograd import Method
from isograd.estimate import Task
from isograd.layer_scale import Covariance, LayerScale
from isograd.lm.fsdp import Shard
from isograd.lm.prompts import PromptStyle
from isograd.lm.score import Prediction
from isograd.qa.baselines import BaselineName
from isograd.qa.baselines.semantic import Entailment, SEVariant
from isograd.qa.grading import Judge

OPTIONS = [Method, Task, Covariance, LayerScale, Prediction, PromptStyle, BaselineName, Entailment, SEVariant, Judge,
           Shard]


@pytest.mark.parametrize("enum", OPTIONS, ids=lambda e: e.__name__)
def test_parse_accepts_members_and_values(enum):
    for m in enum:
        assert enum.parse(m) is m
        assert enum.parse(m.value) is m


@pytest.mark.parametrize("enum", OPTIONS, ids=lambda e: e.__name__)
def test_parse_error_lists_allowed_values(enum):
    with pytest.raises(ValueError) as err:
        enum.parse("no-such-value")
    msg = str(err.value)
    assert msg.startswith(f"unknown {enum.noun()} 'no-such-value'")
    for m in enum:
        assert repr(m.value) in msg
