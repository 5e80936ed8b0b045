from mainspring_services.recorder.main import main

main()
