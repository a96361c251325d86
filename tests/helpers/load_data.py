"""A process of a several-process launch that only loads data (`load_image_data` in store mode) and records, in
`<log folder>/build-<machine>-<local rank>-<rank>`, each time it built a store; prints its first training image's sum.

    python load_data.py <image folder> <relative store folder> <log folder>
"""

import os
import sys
from pathlib import Path

from ddpm_hf.tools.data import DataArguments, load_image_data, loading
from ddpm_hf.tools.distributed import process_state

folder, stores, log = sys.argv[1], sys.argv[2], Path(sys.argv[3])
state = process_state()
build = loading.build_store


def recorded_build(*args, **kwargs):
    machine = os.environ.get("GROUP_RANK", "0")
    (log / f"build-{machine}-{state.local_process_index}-{state.process_index}").write_text(os.getcwd())
    return build(*args, **kwargs)


loading.build_store = recorded_build
args = DataArguments(train_data_dir=folder, resolution=8, data_mode="store", data_store_dir=stores)
data = load_image_data(args, channels=3)
print(f"rank {state.process_index}: {len(data.train)} images, first sums to {int(data.train[0].sum())}")
state.wait_for_everyone()
