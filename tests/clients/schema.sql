drop table if exists customer_orders;
drop table if exists customers;
drop table if exists purchases;
drop table if exists accounts;
drop table if exists orders;
drop table if exists users;
create table users (id bigint primary key, name text not null, email text);
create table orders (id bigint not null, user_id bigint not null, amount numeric(12,2) not null,
                     status text not null default 'new', primary key (user_id, id));
-- The tutorial's ORM schema: serial keys left to the database (pgshard generates them).
create table accounts (id serial primary key, name text not null);
create table purchases (id serial, account_id integer not null, amount numeric(12,2) not null,
                        primary key (account_id, id));
-- Issue 30: the schema every ORM generates, a serial id that is not the shard key
-- (pgshard takes its values from the first shard's sequence too).
create table customers (id bigserial primary key, name text not null);
create table customer_orders (id serial primary key,
                              customer_id bigint not null references customers (id),
                              item text not null, qty integer not null default 1);
