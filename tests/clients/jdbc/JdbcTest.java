// pgJDBC (Debian's libpostgresql-jdbc-java, default prepareThreshold = 5: from the fifth
// execution a PreparedStatement becomes a named server statement) through pgshard in
// transaction pooling. Run: java -cp /usr/share/java/postgresql.jar JdbcTest.java
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcTest {
  static int failures = 0;

  static void check(boolean ok, String what) {
    if (!ok) {
      failures++;
      System.err.println("FAIL: " + what);
    }
  }

  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://" + System.getenv("PGSHARD_HOST") + ":"
        + System.getenv("PGSHARD_PORT") + "/app";
    try (Connection c = DriverManager.getConnection(url, "app", "secret")) {
      try (Statement s = c.createStatement()) {
        s.execute("delete from orders where user_id between 3001 and 3010");
        s.execute("delete from users where id between 3001 and 3010");
      }
      String[] amounts = {"1.25", "2.25", "3.25"};
      // One transaction per user; the same PreparedStatements run more than five times.
      c.setAutoCommit(false);
      try (PreparedStatement addUser = c.prepareStatement("insert into users (id, name) values (?, ?)");
           PreparedStatement addOrder =
               c.prepareStatement("insert into orders (id, user_id, amount) values (?, ?, ?)")) {
        for (long u = 3001; u <= 3010; u++) {
          addUser.setLong(1, u);
          addUser.setString(2, "jdbc-" + u);
          addUser.executeUpdate();
          for (int k = 1; k <= 3; k++) {
            addOrder.setLong(1, u * 10 + k);
            addOrder.setLong(2, u);
            addOrder.setBigDecimal(3, new BigDecimal(amounts[k - 1]));
            addOrder.executeUpdate();
          }
          c.commit();
        }
      }
      // A rolled-back insert is gone.
      try (PreparedStatement ghost = c.prepareStatement("insert into users (id, name) values (?, ?)")) {
        ghost.setLong(1, 3099);
        ghost.setString(2, "ghost");
        ghost.executeUpdate();
      }
      c.rollback();
      c.setAutoCommit(true);
      try (PreparedStatement byUser =
               c.prepareStatement("select id, amount from orders where user_id = ? order by id")) {
        for (int round = 0; round < 3; round++) {
          for (long u = 3001; u <= 3010; u++) {
            byUser.setLong(1, u);
            try (ResultSet rs = byUser.executeQuery()) {
              int k = 0;
              while (rs.next()) {
                k++;
                check(rs.getLong(1) == u * 10 + k, "order id of " + u);
                check(rs.getBigDecimal(2).equals(new BigDecimal(amounts[k - 1])), "amount of " + u);
              }
              check(k == 3, "three orders for " + u + ", got " + k);
            }
          }
        }
      }
      try (PreparedStatement count = c.prepareStatement("select count(*) from users where id = ?")) {
        count.setLong(1, 3099);
        try (ResultSet rs = count.executeQuery()) {
          check(rs.next() && rs.getLong(1) == 0, "rolled-back user absent");
        }
      }
      // Cross-shard report, run enough times to become a server-side statement.
      try (PreparedStatement report = c.prepareStatement(
               "select count(*), sum(amount), avg(amount) from orders where user_id between ? and ?")) {
        for (int i = 0; i < 7; i++) {
          report.setLong(1, 3001);
          report.setLong(2, 3010);
          try (ResultSet rs = report.executeQuery()) {
            check(rs.next(), "report row");
            check(rs.getLong(1) == 30, "report count " + rs.getLong(1));
            check(rs.getBigDecimal(2).equals(new BigDecimal("67.50")), "report sum " + rs.getBigDecimal(2));
            check(rs.getBigDecimal(3).equals(new BigDecimal("2.2500000000000000")),
                "report avg " + rs.getBigDecimal(3));
          }
        }
      }
      try (Statement s = c.createStatement();
           ResultSet rs = s.executeQuery("select user_id, sum(amount) from orders where user_id "
               + "between 3001 and 3010 group by user_id order by user_id desc limit 2")) {
        check(rs.next() && rs.getLong(1) == 3010 && rs.getBigDecimal(2).equals(new BigDecimal("6.75")),
            "grouped report first row");
        check(rs.next() && rs.getLong(1) == 3009, "grouped report second row");
        check(!rs.next(), "grouped report has two rows");
      }
      // Generated keys (serial id left to the database) from a PreparedStatement run past
      // prepareThreshold, so a named server statement: each run gets a new id on its shard.
      try (Statement s = c.createStatement()) {
        s.execute("delete from accounts where name like 'jdbc-gen-%'");
      }
      java.util.Set<Long> ids = new java.util.HashSet<>();
      try (PreparedStatement add = c.prepareStatement(
               "insert into accounts (name) values (?)", Statement.RETURN_GENERATED_KEYS);
           PreparedStatement byId = c.prepareStatement("select name from accounts where id = ?")) {
        for (int i = 0; i < 9; i++) {
          add.setString(1, "jdbc-gen-" + i);
          add.executeUpdate();
          try (ResultSet keys = add.getGeneratedKeys()) {
            check(keys.next(), "generated key returned, run " + i);
            long id = keys.getLong("id");
            ids.add(id);
            byId.setLong(1, id);
            try (ResultSet rs = byId.executeQuery()) {
              check(rs.next() && rs.getString(1).equals("jdbc-gen-" + i),
                  "generated id " + id + " reads back on its shard");
            }
          }
        }
      }
      check(ids.size() == 9, "nine distinct generated ids, got " + ids.size());
      // executeBatch: one pipeline whose rows go to every shard, all or nothing as on
      // PostgreSQL (before: refused, "statements in one pipelined batch route to different
      // shards").
      try (Statement s = c.createStatement()) {
        s.execute("delete from users where id between 3500 and 3600");
      }
      try (PreparedStatement add = c.prepareStatement("insert into users (id, name) values (?, ?)")) {
        for (long u = 3500; u < 3520; u++) {
          add.setLong(1, u);
          add.setString(2, "batch-" + u);
          add.addBatch();
        }
        int[] counts = add.executeBatch();
        check(counts.length == 20, "batch counts " + counts.length);
        for (long u = 3550; u < 3560; u++) {
          add.setLong(1, u == 3555 ? 3505 : u);  // 3505 is there already
          add.setString(2, "dup");
          add.addBatch();
        }
        try {
          add.executeBatch();
          check(false, "a batch with a duplicate key fails");
        } catch (java.sql.BatchUpdateException expected) {
        }
      }
      try (Statement s = c.createStatement();
           ResultSet rs = s.executeQuery(
               "select count(*) filter (where name like 'batch-%'), count(*) filter (where name = 'dup') "
               + "from users where id between 3500 and 3600")) {
        check(rs.next() && rs.getLong(1) == 20 && rs.getLong(2) == 0,
            "batch rows kept: " + rs.getLong(1) + " and failed batch rows: " + rs.getLong(2));
      }
    } catch (SQLException e) {
      e.printStackTrace();
      failures++;
    }
    if (failures > 0) {
      System.err.println(failures + " failure(s)");
      System.exit(1);
    }
    System.out.println("jdbc: all checks passed");
  }
}
