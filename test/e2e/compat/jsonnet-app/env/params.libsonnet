{
  replicas: 2,
  image: 'registry.example/guestbook:1.4',
}
