"""`python -m bertflow.model.training`: the training entry point, `train.main`."""

import sys

from bertflow.model.training.train import main

sys.exit(main())
