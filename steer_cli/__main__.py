from steer_cli.cli import main

main()
