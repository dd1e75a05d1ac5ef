from tidekv.chaos.cli import main

main()
