"""Seeds the Entry table with the data set of data/packages.txt, so that the example runs offline."""

from pathlib import Path

from django.db import migrations

DATA = Path(__file__).resolve().parent.parent / "data" / "packages.txt"


def read_entries():
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            title, _, summary = line.partition("|")
            yield title.strip(), summary.strip()


def seed(apps, schema_editor):
    Entry = apps.get_model("search", "Entry")
    Entry.objects.bulk_create(Entry(title=title, summary=summary) for title, summary in read_entries())


def unseed(apps, schema_editor):
    Entry = apps.get_model("search", "Entry")
    Entry.objects.filter(title__in=[title for title, _ in read_entries()]).delete()


class Migration(migrations.Migration):
    dependencies = [("search", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
