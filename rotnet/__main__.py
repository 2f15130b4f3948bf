"""python -m rotnet stage=pretext|semi|baseline|selftrain|all|probe|label_sweep [overrides]"""
import logging
import os
import sys
import warnings

import hydra
from omegaconf import DictConfig

from rotnet.errors import RotnetError
from rotnet.mnist_files import MNISTFileError


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rotnet.run import run

    logging.getLogger("lightning.pytorch").propagate = False  # Lightning prints its own lines once
    # Hydra's files are already in the run directory; the CSV logger deletes nothing of theirs.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # inside Lightning
    warnings.filterwarnings("ignore", message="Found .* module.* in eval mode")  # frozen blocks, on purpose
    try:
        run(cfg)
    except (RotnetError, MNISTFileError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"rotnet: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
