from mainspring_services.dispatcher.main import main

main()
