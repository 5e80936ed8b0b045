from services.dataset_watcher.main import main

main()
