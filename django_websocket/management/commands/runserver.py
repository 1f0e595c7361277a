"""``manage.py runserver`` whose server can upgrade connections to WebSocket.

Every option of Django's runserver still works (and staticfiles' when that app is installed);
``--multithreaded`` is accepted for the 2010 command line: threading is already the default.
"""

from django.apps import apps

from ...servers.devserver import WebSocketWSGIServer

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as BaseCommand
else:
    from django.core.management.commands.runserver import Command as BaseCommand


class Command(BaseCommand):
    help = BaseCommand.help + " WebSocket views are served too."
    server_cls = WebSocketWSGIServer

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--multithreaded",
            action="store_true",
            help="Serve each connection in its own thread (the default; kept for compatibility).",
        )

    def handle(self, *args, **options):
        if options.get("multithreaded") and not options.get("use_threading", True):
            from django.core.management.base import CommandError

            raise CommandError("--multithreaded and --nothreading contradict each other.")
        return super().handle(*args, **options)
