from mainspring_services.dataset_watcher.main import main

main()
