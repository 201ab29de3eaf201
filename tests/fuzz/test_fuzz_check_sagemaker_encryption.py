"""Mutated real-shaped events never crash check_sagemaker_encryption, and reach AWS only when genuine.

The damage is the shared strategy in mutations.py (every sample in events/, SageMaker ones included).
Runs with StopUnencryptedJobs on and off: no damaged event may lead to a Stop* call. `make test` runs
2,000 examples; `make fuzz` runs MLWARDEN_FUZZ_EXAMPLES (10,000).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mutations import OUTCOMES, SAMPLES, damaged_events, fuzz_settings, run_damaged

from mlwarden.checks import check_sagemaker_encryption as sagemaker
from mlwarden.events import ApiCall, parse_event
from mlwarden.rules.sagemaker import Kind

pytestmark = pytest.mark.fuzz

REMEDIATOR = "arn:aws:iam::123456789012:role/CheckSageMakerEncryptionRole"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"


def _genuine_trigger(event: Any) -> bool:
    parsed = parse_event(event)
    if isinstance(parsed, ApiCall) and parsed.error_code:
        return False
    return not isinstance(sagemaker.targets_from_event(parsed), str)


# moto 5.2.5 cannot describe these (in-process it raises NotImplementedError, and a KeyError for a feature group
# that does not exist: not AWS errors). Their samples go through the parser and target tests, not through moto.
MOTO_CANNOT_DESCRIBE = frozenset({Kind.MONITORING_SCHEDULE, Kind.INFERENCE_EXPERIMENT, Kind.FEATURE_GROUP})


def _moto_describes(event: Any) -> bool:
    target = sagemaker.targets_from_event(parse_event(event))
    return isinstance(target, str) or target.kind not in MOTO_CANNOT_DESCRIBE


MOTO_SAMPLES = [sample for sample in SAMPLES if _moto_describes(sample)]


@fuzz_settings
@given(event=damaged_events(MOTO_SAMPLES), stop_jobs=st.booleans())
def test_damaged_events_end_in_an_outcome_and_never_stop_a_job(
    event: Any, stop_jobs: bool, aws: Any, make_handler: Callable[..., Any]
) -> None:
    handler = _handler(aws, make_handler, stop_jobs)
    outcome, calls = run_damaged(handler, event, ("sagemaker", "s3"))

    assert outcome in OUTCOMES
    if not _genuine_trigger(event):
        assert outcome == "ignored"
        assert calls == []
    # moto's jobs are Completed: nothing is ever running, so nothing may be stopped.
    assert not [c for c in calls if c.startswith("Stop")]


_HANDLERS: dict[tuple[int, bool], Any] = {}


def _handler(aws: Any, make_handler: Callable[..., Any], stop_jobs: bool) -> Any:
    # One handler per moto world and setting: importing it per example would dominate the run time.
    if not any(key[0] == id(aws) for key in _HANDLERS):
        _HANDLERS.clear()
        aws.bucket("mlw-patient-records", tags={"mlwarden:pii": "true"})
        boto3.client("sagemaker", region_name="us-east-1").create_training_job(
            TrainingJobName="mlw-churn-xgb-unencrypted",
            AlgorithmSpecification={"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
            RoleArn=ROLE,
            InputDataConfig=[
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://mlw-patient-records/t/"}},
                }
            ],
            OutputDataConfig={"S3OutputPath": "s3://mlw-model-artifacts/churn/"},
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
        )
    key = (id(aws), stop_jobs)
    if key not in _HANDLERS:
        _HANDLERS[key] = make_handler(
            app="check_sagemaker_encryption",
            remediator_role_arn=REMEDIATOR,
            env={"STOP_UNENCRYPTED_JOBS": str(stop_jobs).lower()},
        )
    return _HANDLERS[key]
