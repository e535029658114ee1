from omniground.cli import main

main()
