import sys

from train.run import main

sys.exit(main())
