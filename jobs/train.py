"""Fine-tuning as a Ray job: ray job submit --working-dir . -- python jobs/train.py --config CONFIG"""

import sys

from _entry import main
from s2d_ray.training import format_result, train

if __name__ == "__main__":
    sys.exit(main("train", train, format_result))
