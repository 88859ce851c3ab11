import uuid

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100, unique=True)
    joined = models.DateTimeField(auto_now_add=True)
    key = models.UUIDField(default=uuid.uuid4, unique=True)


class Tag(models.Model):
    label = models.CharField(max_length=40, unique=True)


class Book(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    title = models.CharField(max_length=200, db_index=True)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.IntegerField(default=0)
    published = models.DateField(null=True)
    data = models.JSONField(default=dict)
    touched = models.DateTimeField(null=True)
    updated = models.DateTimeField(auto_now=True)
    tags = models.ManyToManyField(Tag, related_name="books")
