from mprnet_cli._entry import main

main()
