from scidex_alloc.cli import main

main()
