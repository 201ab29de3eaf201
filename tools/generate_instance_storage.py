"""Write layers/core/mlwarden/rules/instance_storage.py: the EC2 families whose instances carry local NVMe storage.

SageMaker cannot put a KMS key on the storage of these instances (`VolumeKmsKeyId` is refused;
AWS encrypts local NVMe storage with a hardware module on the instance), so the volume-key rule
must not flag them. The source is the EC2 instance-type data (DescribeInstanceTypes) that the
pinned moto release ships in moto/ec2/resources/instance_types.json.gz: a family counts when every
one of its sizes has `InstanceStorageSupported` with `NvmeSupport` "required". Re-run after moving
the moto pin; tests/unit/test_instance_storage.py fails when the committed module is stale.

    .venv/bin/python tools/generate_instance_storage.py
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

import moto

OUTPUT = Path(__file__).resolve().parents[1] / "layers" / "core" / "mlwarden" / "rules" / "instance_storage.py"


def nvme_families() -> list[str]:
    data = json.loads(
        gzip.decompress((Path(moto.__file__).parent / "ec2/resources/instance_types.json.gz").read_bytes())
    )
    local_nvme: dict[str, set[bool]] = defaultdict(set)
    for name, info in data.items():
        storage = info.get("InstanceStorageInfo") or {}
        has = bool(info.get("InstanceStorageSupported")) and storage.get("NvmeSupport") == "required"
        local_nvme[name.split(".", 1)[0]].add(has)
    return sorted(family for family, values in local_nvme.items() if values == {True})


def render(families: list[str]) -> str:
    rows = "\n".join(f'        "{family}",' for family in families)
    return (
        '"""EC2 instance families with local NVMe instance storage. GENERATED: do not edit.\n\n'
        f"Written by tools/generate_instance_storage.py from the EC2 instance-type data of moto {moto.__version__}\n"
        '(InstanceStorageSupported and NvmeSupport "required" on every size of the family).\n'
        '"""\n\n'
        "NVME_FAMILIES = frozenset(\n"
        "    {\n"
        f"{rows}\n"
        "    }\n"
        ")\n"
    )


def main() -> int:
    OUTPUT.write_text(render(nvme_families()), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
