from sweep.app import main

main()
