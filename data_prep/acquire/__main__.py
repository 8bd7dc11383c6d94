from data_prep.acquire.cli import main

main()
