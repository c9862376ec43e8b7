"""`python -m producer.gateway`: run the HTTP gateway."""

from producer.gateway.app import main

main()
