"""The sweep benchmark's own instruments, at a tiny scale: the seeding's ground truth, the request counter, the floor.

`make bench-sweep` runs at N = 100 and 1,000; if its meter or its answer key were wrong, every figure would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.sweep.run import HERE, counts, run_floor
from bench.sweep.seed import GroundTruth, score, seed
from mlwarden_cli.emulator import FAKE_CREDENTIALS, moto_server

pytestmark = pytest.mark.integration
N = 20


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[str, GroundTruth]]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAKE_CREDENTIALS.items():
            patch.setenv(key, value)
        with moto_server(server=(str(HERE / "counting_moto_server.py"),)) as endpoint:
            yield endpoint, seed(endpoint, N)


def test_the_ground_truth_names_the_seeded_bad_resources(seeded: tuple[str, GroundTruth]) -> None:
    _, truth = seeded

    assert truth.as_dict() == {
        "n": N,
        "resources": {"bucket": 20, "policy": 10, "training_job": 2, "notebook": 1},
        "bad": {"bucket": 4, "policy": 2, "training_job": 1, "notebook": 1},
        "public_buckets": 2,
    }


def test_the_floor_finds_every_seeded_bad_resource_and_is_charged_for_each_request(
    seeded: tuple[str, GroundTruth], tmp_path: Path
) -> None:
    endpoint, truth = seeded
    counts(endpoint, "reset")

    floor = run_floor(endpoint, tmp_path, timeout=120)
    charged = counts(endpoint)

    found = score(truth, floor.reported)
    assert found["found_total"] == found["bad_total"] == 8
    assert found["false_alarms"] == {"bucket": 0, "policy": 0, "training_job": 0, "notebook": 0}
    # One block read per bucket; ACL only for the 4 without a block; policy status for the 2 private ones.
    assert charged["by_operation"]["s3:GetPublicAccessBlock"] == N
    assert charged["by_operation"]["s3:GetBucketAcl"] == 4
    assert charged["by_operation"]["s3:GetBucketPolicyStatus"] == 2
    assert charged["by_operation"]["iam:GetAccountAuthorizationDetails"] == 1
    assert charged["by_operation"]["sagemaker:DescribeTrainingJob"] == 2
    assert charged["total"] == sum(charged["by_operation"].values())
    assert counts(endpoint, "reset")["total"] == 0
