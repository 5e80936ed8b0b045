from mainspring_services.runner.main import main

main()
