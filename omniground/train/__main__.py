"""`python -m omniground.train CONFIG.yaml` (what `accelerate launch -m omniground.train` runs)."""

from omniground.train.cli import main

main()
