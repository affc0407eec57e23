"""The Connexion and WSGI glue both apps share: error answers, bodies, request reading, the gunicorn worker."""
