from mainspring_services.ticker.main import main

main()
