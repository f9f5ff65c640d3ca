from kubemark_up.cli import main

main()
