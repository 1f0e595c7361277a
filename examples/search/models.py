from django.db import models


class Entry(models.Model):
    """One searchable entry: a package of the seeded data set, or one added with the form."""

    title = models.CharField(max_length=100)
    summary = models.CharField(max_length=300, blank=True)
    added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-added", "-id"]
        verbose_name_plural = "entries"

    def __str__(self):
        return self.title
